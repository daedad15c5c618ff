make demo   # builds .venv, gets Fashion-MNIST, trains plain and joint SimCLR on 0.5% of the images, prints both beside the floors
make test   # builds the same environment and runs the test suite
