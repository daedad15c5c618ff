for mode in none hard-samples hard-pairs joint; do
    synthcl train fashion-mnist-joint synthesis.mode=$mode --out runs/mode-$mode
    synthcl eval runs/mode-$mode --quiet
done
