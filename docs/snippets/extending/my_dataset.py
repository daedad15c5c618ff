# my_dataset.py: stripes, horizontal or vertical (2 classes), made on the fly
import torch

from synthcl import DATASETS
from synthcl.data import DatasetRequest, TensorImages


@DATASETS.register("stripes")
def build_stripes(request: DatasetRequest) -> TensorImages:
    n = request.read_options({"n": (int, 2048)})["n"]  # recipe: data.options: {n: 2048}
    size, channels = request.image_size or 32, request.channels or 1
    rng = torch.Generator().manual_seed(0 if request.split == "train" else 1)
    count = n if request.split == "train" else n // 4
    labels = torch.randint(0, 2, (count,), generator=rng)
    period = torch.randint(2, 6, (count, 1, 1), generator=rng)
    line = torch.arange(size).view(1, size, 1)
    stripes = ((line // period) % 2).expand(count, size, size)
    stripes = torch.where(labels.view(-1, 1, 1) == 1, stripes.transpose(1, 2), stripes)
    images = (stripes * 255).to(torch.uint8).unsqueeze(1).expand(-1, channels, -1, -1).contiguous()
    return TensorImages(images, labels, name=request.name, num_classes=2)
