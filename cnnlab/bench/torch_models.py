"""PyTorch counterparts of cnnlab's models that torchvision does not have, layer for layer as
cnnlab has them, for the benchmark's PyTorch worker (cnnlab/bench/torch_worker.py): LeNet-5
(modern), the CIFAR ResNets of He et al. 2016 §4.2 (option A), Wang, Yan & Oates 2017's FCN
and ResNet for series, torchvision's ResNet layout with 1-D / 3-D layers, U-Net and 3-D U-Net
(same padding) as cnnlab.models.unet builds them, and ``build(name)``
for every registered name (torchvision's builders where they exist). Imports torch; nothing
in cnnlab imports this module.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


# --- architectures torchvision does not have ---------------------------------------------------
class LeNet5(nn.Module):
  """conv 6@5x5 pad 2, ReLU, max-pool 2; conv 16@5x5, ReLU, max-pool 2; fc 120-84-classes."""

  def __init__(self, num_classes=10, in_channels=1):
    super().__init__()
    self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=2)
    self.conv2 = nn.Conv2d(6, 16, 5)
    self.fc1 = nn.Linear(16 * 5 * 5, 120)
    self.fc2 = nn.Linear(120, 84)
    self.fc3 = nn.Linear(84, num_classes)

  def forward(self, x):
    x = F.max_pool2d(F.relu(self.conv1(x)), 2)
    x = F.max_pool2d(F.relu(self.conv2(x)), 2)
    x = torch.flatten(x, 1)
    x = F.relu(self.fc1(x))
    x = F.relu(self.fc2(x))
    return self.fc3(x)


class _CifarBlock(nn.Module):
  def __init__(self, cin, planes, stride):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.stride, self.extra = stride, planes - cin

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    s = x[:, :, ::self.stride, ::self.stride] if self.stride > 1 else x
    if self.extra > 0:   # option A: zero-pad the new channels
      s = F.pad(s, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
    return F.relu(y + s)


class CifarResNet(nn.Module):
  """Depth 6n+2: 3x3 conv 16, three stages of n blocks at 16/32/64, global pool, fc."""

  def __init__(self, n, num_classes=10):
    super().__init__()
    self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(16)
    blocks, cin = [], 16
    for s, planes in enumerate((16, 32, 64)):
      for i in range(n):
        blocks.append(_CifarBlock(cin, planes, 2 if s > 0 and i == 0 else 1))
        cin = planes
    self.blocks = nn.Sequential(*blocks)
    self.fc = nn.Linear(64, num_classes)
    for m in self.modules():
      if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

  def forward(self, x):
    x = self.blocks(F.relu(self.bn1(self.conv1(x))))
    return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# --- 1-D baselines of Wang, Yan, Oates 2017 (cnnlab.models.timeseries), Keras defaults ---------
def _keras_bn(features):
  return nn.BatchNorm1d(features, eps=1e-3, momentum=0.01)   # Keras momentum 0.99


class FCN1D(nn.Module):
  """conv 128@8, 256@5, 128@3 ('same' padding, biases), each + BN + ReLU; GAP; dense."""

  def __init__(self, num_classes, channels, filters=(128, 256, 128), kernels=(8, 5, 3)):
    super().__init__()
    layers, cin = [], channels
    for f, k in zip(filters, kernels):
      layers += [nn.Conv1d(cin, f, k, padding="same"), _keras_bn(f), nn.ReLU()]
      cin = f
    self.body = nn.Sequential(*layers)
    self.fc = nn.Linear(cin, num_classes)

  def forward(self, x):
    return self.fc(self.body(x).mean(-1))


class _Block1D(nn.Module):
  def __init__(self, cin, features, kernels=(8, 5, 3)):
    super().__init__()
    self.convs = nn.ModuleList()
    self.bns = nn.ModuleList()
    for i, k in enumerate(kernels):
      self.convs.append(nn.Conv1d(cin if i == 0 else features, features, k, padding="same"))
      self.bns.append(_keras_bn(features))
    self.short_conv = nn.Conv1d(cin, features, 1) if cin != features else None
    self.short_bn = _keras_bn(features)

  def forward(self, x):
    y = x
    for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
      y = bn(conv(y))
      if i < len(self.convs) - 1:
        y = F.relu(y)
    s = self.short_conv(x) if self.short_conv is not None else x
    return F.relu(y + self.short_bn(s))


class ResNet1D(nn.Module):
  """Three residual blocks of 64, 128, 128 maps (kernels 8, 5, 3); GAP; dense."""

  def __init__(self, num_classes, channels, features=(64, 128, 128)):
    super().__init__()
    blocks, cin = [], channels
    for f in features:
      blocks.append(_Block1D(cin, f))
      cin = f
    self.blocks = nn.Sequential(*blocks)
    self.fc = nn.Linear(cin, num_classes)

  def forward(self, x):
    return self.fc(self.blocks(x).mean(-1))


# --- torchvision's ResNet layout with 1-D / 3-D layers (cnnlab's resnet*_1d / resnet*_3d) -------
_ND_LAYERS = {1: (nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d),
              3: (nn.Conv3d, nn.BatchNorm3d, nn.MaxPool3d)}


class _NdBlock(nn.Module):
  """torchvision's BasicBlock (expansion 1) or Bottleneck (expansion 4, stride in the 3-tap)."""

  def __init__(self, rank, cin, planes, stride, bottleneck):
    super().__init__()
    conv, bn, _ = _ND_LAYERS[rank]
    self.expansion = 4 if bottleneck else 1
    out = planes * self.expansion
    if bottleneck:
      self.body = nn.Sequential(
          conv(cin, planes, 1, bias=False), bn(planes), nn.ReLU(inplace=True),
          conv(planes, planes, 3, stride, 1, bias=False), bn(planes), nn.ReLU(inplace=True),
          conv(planes, out, 1, bias=False), bn(out))
    else:
      self.body = nn.Sequential(
          conv(cin, planes, 3, stride, 1, bias=False), bn(planes), nn.ReLU(inplace=True),
          conv(planes, planes, 3, 1, 1, bias=False), bn(planes))
    self.down = None
    if stride != 1 or cin != out:
      self.down = nn.Sequential(conv(cin, out, 1, stride, bias=False), bn(out))

  def forward(self, x):
    s = self.down(x) if self.down is not None else x
    return F.relu(self.body(x) + s)


class NdResNet(nn.Module):
  def __init__(self, rank, stages, bottleneck, num_classes, channels):
    super().__init__()
    conv, bn, pool = _ND_LAYERS[rank]
    self.stem = nn.Sequential(conv(channels, 64, 7, 2, 3, bias=False), bn(64),
                              nn.ReLU(inplace=True), pool(3, 2, 1))
    blocks, cin = [], 64
    for s, n in enumerate(stages):
      for i in range(n):
        blocks.append(_NdBlock(rank, cin, 64 * 2 ** s, 2 if s > 0 and i == 0 else 1,
                               bottleneck))
        cin = 64 * 2 ** s * (4 if bottleneck else 1)
    self.blocks = nn.Sequential(*blocks)
    self.fc = nn.Linear(cin, num_classes)

  def forward(self, x):
    x = self.blocks(self.stem(x))
    return self.fc(torch.flatten(x, 2).mean(-1))


_ND_DEPTHS = {"resnet18": ((2, 2, 2, 2), False), "resnet34": ((3, 4, 6, 3), False),
              "resnet50": ((3, 4, 6, 3), True)}


_CIFAR_DEPTHS = {"resnet20": 3, "resnet32": 5, "resnet44": 7, "resnet56": 9, "resnet110": 18}
_VIDEO = ("r3d_18", "mc3_18", "r2plus1d_18")


# --- U-Net (Ronneberger et al. 2015) and 3-D U-Net (Çiçek et al. 2016), as cnnlab.models.unet ---
_ND_UNET = {2: (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.ConvTranspose2d),
            3: (nn.Conv3d, nn.BatchNorm3d, nn.MaxPool3d, nn.ConvTranspose3d)}
# name -> (rank, base channels, depth, BatchNorm, affine BN, double before pool, up-conv bias)
_UNETS = {"unet": (2, 64, 4, False, True, False, True),
          "unet3d": (3, 32, 3, True, False, True, False)}


class _ConvPair(nn.Sequential):
  def __init__(self, rank, cin, widths, bn, affine):
    conv, norm = _ND_UNET[rank][:2]
    layers = []
    for w in widths:
      layers += [conv(cin, w, 3, padding=1)]
      layers += [norm(w, affine=affine)] if bn else []
      layers += [nn.ReLU(inplace=True)]
      cin = w
    super().__init__(*layers)


class UNet(nn.Module):
  """cnnlab's ``unet`` / ``unet3d`` with same padding: the same levels, widths, BatchNorm
  placement and up-convolutions, so the parameter counts agree."""

  def __init__(self, rank, base, depth, bn, affine, double, up_bias, num_classes, channels):
    super().__init__()
    conv, _, pool, upconv = _ND_UNET[rank]
    widths = [(base * 2 ** l, base * 2 ** (l + 1)) if double else (base * 2 ** l,) * 2
              for l in range(depth + 1)]
    self.down = nn.ModuleList()
    cin = channels
    for w in widths:
      self.down.append(_ConvPair(rank, cin, w, bn, affine))
      cin = w[1]
    self.pool = pool(2)
    self.ups, self.up_convs = nn.ModuleList(), nn.ModuleList()
    for level in reversed(range(depth)):
      up = cin if double else cin // 2
      self.ups.append(upconv(cin, up, 2, stride=2, bias=up_bias))
      self.up_convs.append(_ConvPair(rank, up + widths[level][1], (widths[level][1],) * 2, bn,
                                     affine))
      cin = widths[level][1]
    self.head = conv(cin, num_classes, 1)

  def forward(self, x):
    skips = []
    for block in self.down[:-1]:
      skips.append(block(x))
      x = self.pool(skips[-1])
    x = self.down[-1](x)
    for up, block, skip in zip(self.ups, self.up_convs, reversed(skips)):
      x = block(torch.cat([skip, up(x)], dim=1))
    return self.head(x)


def build(name, num_classes, channels):
  """The torch model for a cnnlab registry name; ValueError if there is no equivalent."""
  if name == "lenet5":
    return LeNet5(num_classes, channels)
  if name in _UNETS:
    return UNet(*_UNETS[name], num_classes, channels)
  if name in _CIFAR_DEPTHS and channels == 3:
    return CifarResNet(_CIFAR_DEPTHS[name], num_classes)
  if name == "fcn1d":
    return FCN1D(num_classes, channels)
  if name == "resnet1d":
    return ResNet1D(num_classes, channels)
  depth, _, dims = name.partition("_")
  if depth in _ND_DEPTHS and dims in ("1d", "3d"):
    return NdResNet(int(dims[0]), *_ND_DEPTHS[depth], num_classes, channels)
  import torchvision
  if name in _VIDEO:
    return getattr(torchvision.models.video, name)(num_classes=num_classes)
  builder = getattr(torchvision.models, name, None)
  if builder is None or not callable(builder):
    raise ValueError(f"no PyTorch equivalent of {name!r}")
  kw = {"num_classes": num_classes}
  if name == "googlenet":
    kw.update(aux_logits=True, init_weights=True)
  return builder(**kw)


def _memory_format(rank, channels_last):
  if not channels_last:
    return torch.contiguous_format
  return {2: torch.channels_last, 3: torch.channels_last_3d}[rank]
