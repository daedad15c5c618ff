# run on each of 2 machines with 8 GPUs: MACHINE_RANK=0 on the main one, 1 on the other;
# MAIN_IP is the main machine's address, reachable from the other one
accelerate launch --multi_gpu --num_machines 2 --num_processes 16 --machine_rank $MACHINE_RANK \
    --main_process_ip $MAIN_IP --main_process_port 29500 \
    -m synthcl train cifar10-simclr --out runs/c10-2machines
