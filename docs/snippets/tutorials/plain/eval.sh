synthcl eval runs/qs                                    # few-label and full linear probes, kNN top-1
synthcl eval runs/qs --protocol knn --init random       # the same architecture, randomly initialised
synthcl eval runs/qs --init pixels                       # raw pixels through the same probes
