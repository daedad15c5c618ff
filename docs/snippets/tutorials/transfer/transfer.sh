synthcl train quickstart --out runs/qs                                  # pretrain on Fashion-MNIST, labels unused
synthcl eval runs/qs --protocol transfer --dataset mnist                # linear probe on MNIST, 10% and 100% labels
synthcl eval runs/qs --protocol transfer --dataset mnist --init random  # the randomly initialised baseline
