"""Image networks: ResNets with torchvision's parameter names, SwiftNet, UNet-ResNet, DeepLab features."""
