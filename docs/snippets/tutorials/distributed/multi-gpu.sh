# one machine, 4 GPUs: one process per GPU, DDP, bf16 autocast
accelerate launch --multi_gpu --num_processes 4 -m synthcl train cifar10-simclr train.precision=bf16 --out runs/c10
