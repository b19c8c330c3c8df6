import pytest
import torch

from dann.config import ModelConfig
from dann.errors import ConfigError
from dann.models import BACKBONES, create_backbone
from dann.models.backbones import LeNet
from dann.plan import create_network

SHAPES = {"lenet": (3, 28, 28), "lenet_conv": (3, 28, 28), "mlp": (3, 8, 8)}


@pytest.mark.parametrize("name", BACKBONES.names())
def test_every_registered_backbone_keeps_the_contract(name):
    shape = SHAPES[name]
    backbone = create_backbone(ModelConfig(backbone=name), shape)
    assert backbone(torch.randn(2, *shape)).shape == (2, backbone.num_features)


def test_lenet_is_the_papers_architecture():
    net = LeNet(3, (28, 28))
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(32, (5, 5)), (48, (5, 5))]
    assert [lin.out_features for lin in linears] == [100, 100] and linears[0].in_features == 48 * 4 * 4


@pytest.mark.parametrize("bottleneck", [0, 32])
def test_network_forward_returns_logits_in_both_modes(bottleneck):
    net = create_network(ModelConfig(backbone="lenet", bottleneck_dim=bottleneck), (3, 28, 28), 10)
    x = torch.randn(4, 3, 28, 28)
    assert net(x).shape == (4, 10)
    net.eval()
    assert net(x).shape == (4, 10)
    f = net.forward_features(x)
    assert f.shape == (4, bottleneck or 100) and net.domain_logits(f, 1.0).shape == (4,)


def test_timm_backbone_and_local_pretrained_file_round_trip(tmp_path):
    cfg = ModelConfig(backbone="resnet18")
    torch.manual_seed(0)
    source = create_backbone(cfg, (3, 32, 32))
    assert source.num_features == 512 and source(torch.randn(2, 3, 32, 32)).shape == (2, 512)
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    torch.manual_seed(1)
    loaded = create_backbone(ModelConfig(backbone="resnet18", pretrained_file=str(path)), (3, 32, 32))
    for (k, a), b in zip(source.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    with pytest.raises(ConfigError, match=r"weights.pth does not fit backbone.*conv1.weight"):
        create_backbone(ModelConfig(backbone="resnet34", pretrained_file=str(path)), (1, 32, 32))


def test_bad_backbone_names_and_shapes():
    with pytest.raises(
        ConfigError, match=r"unknown backbone 'resnet_18'; valid: lenet, lenet_conv, mlp or any timm model.*resnet18"
    ):
        create_backbone(ModelConfig(backbone="resnet_18"), (3, 32, 32))
    with pytest.raises(ConfigError, match=r"needs images of shape \(C, H, W\)"):
        create_backbone(ModelConfig(backbone="lenet"), (20,))
    with pytest.raises(ConfigError, match="does not exist"):
        create_backbone(ModelConfig(backbone="resnet18", pretrained_file="/nope.pth"), (3, 32, 32))


@pytest.mark.parametrize(("head_dims", "discriminator_dims"), [((), ()), ((100, 100), (100,))])
def test_heads_of_any_depth(head_dims, discriminator_dims):
    cfg = ModelConfig(backbone="lenet_conv", head_dims=head_dims, discriminator_dims=discriminator_dims)
    net = create_network(cfg, (3, 28, 28), 10)
    assert net.num_features == 48 * 4 * 4  # the paper's split: the discriminator reads the conv features
    linears = [m for m in net.head.modules() if isinstance(m, torch.nn.Linear)]
    assert [lin.out_features for lin in linears] == [*head_dims, 10]
    f = net.forward_features(torch.randn(2, 3, 28, 28))
    assert net(torch.randn(2, 3, 28, 28)).shape == (2, 10) and net.domain_logits(f, 0.5).shape == (2,)


@pytest.mark.parametrize(
    ("backbone", "setting", "width"),
    [("test_resnet", None, 256), ("test_resnet", 0, 0), ("test_resnet", 64, 64), ("lenet", None, 0), ("mlp", 32, 32)],
)
def test_bottleneck_is_256_wide_for_timm_backbones_unless_set(backbone, setting, width):
    from dann.models.network import bottleneck_dim

    assert bottleneck_dim(ModelConfig(backbone=backbone, bottleneck_dim=setting)) == width
