synthcl eval runs/qs                                    # linear probe and kNN top-1
synthcl eval runs/qs --protocol knn --init random       # the same architecture, randomly initialised
