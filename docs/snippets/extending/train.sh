synthcl train quickstart data.dataset=stripes data.options.n=512 model.backbone=tiny-convnet \
    model.learner=linear-head-simclr --code my_dataset.py --code my_backbone.py --code my_learner.py \
    --out runs/stripes
synthcl eval runs/stripes --code my_dataset.py --code my_backbone.py --code my_learner.py   # the run names all three
