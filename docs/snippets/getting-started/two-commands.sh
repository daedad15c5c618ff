make demo   # builds .venv, gets Fashion-MNIST, trains the quickstart recipe and prints its accuracies
make test   # builds the same environment and runs the test suite
