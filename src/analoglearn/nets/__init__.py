"""Feed-forward models, created by name through :data:`analoglearn.registry.MODELS`.

Every factory has the signature
``factory(options, *, in_shape: tuple[int, int, int], num_classes: int, generator) -> nn.Module``.
"""

from . import resnet, small, vgg  # noqa: F401  (registers mlp, lenet, resnet18, wrn, vgg11, vgg16)
