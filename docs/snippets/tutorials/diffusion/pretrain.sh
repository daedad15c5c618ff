# the diffusion backend needs the diffusion extra: pip install -e ".[diffusion]"
synthcl train fashion-mnist-diffusion --out runs/fashion-mnist-diffusion        # denoising loss, 2 CPU cores
synthcl generate runs/fashion-mnist-diffusion --pairs --out diffusion-pairs.png
