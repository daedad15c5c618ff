# two CPU processes (gloo) on one machine: the same program under torch's own launcher
torchrun --nproc_per_node 2 -m synthcl train quickstart train.cpu=true --out runs/qs-2cpu
