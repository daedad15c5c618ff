synthcl eval runs/scarce-joint            # linear (all labels), kNN, and linear on 1% of the labels (3 subsets)
synthcl eval runs/scarce --init pixels    # floor: the raw pixels, standardised, through the same probes
synthcl eval runs/scarce --init random    # floor: a randomly initialised encoder
synthcl eval runs/scarce-all --protocol few-label
