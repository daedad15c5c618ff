make venv                  # .venv: torch 2.14.1, torchvision 0.29.1, synthcl with its dev and metrics extras
make data                  # Fashion-MNIST (Debian's dataset-fashion-mnist as root with apt, else a download)
. .venv/bin/activate       # puts `synthcl` on the PATH
