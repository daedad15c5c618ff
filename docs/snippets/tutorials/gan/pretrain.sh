synthcl train fashion-mnist-gan --out runs/fashion-mnist-gan                # pretrain the CPU-sized GAN
synthcl eval runs/fashion-mnist-gan --protocol generator --n 2000           # FID (metrics extra) and KID
synthcl generate runs/fashion-mnist-gan --n 64 --out samples.png            # a sample grid
synthcl generate runs/fashion-mnist-gan --pairs --hardness 1.5 --out pairs.png   # positive pairs drifting apart
