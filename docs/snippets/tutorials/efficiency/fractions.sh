for fraction in 0.5 1.0; do
    synthcl train quickstart data.fraction=$fraction --out runs/plain-$fraction
    synthcl train fashion-mnist-joint data.fraction=$fraction --out runs/joint-$fraction
done
synthcl eval runs/joint-0.5 --protocol efficiency                             # labels: 1%, 10%, 100%
synthcl eval runs/plain-1.0 --protocol efficiency --label-fractions 0.1,1     # fractions of your choice
