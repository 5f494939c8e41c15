"""The README's main job: tmix-demo mixes built-in images with the bundled mixer and writes a PNG."""
from PIL import Image

from tmix_aug import demo, hub


def test_demo_with_the_bundled_default_writes_the_picture(tmp_path, capsys):
    assert "cifar10-resnet20" in hub.bundled_names()
    demo.main(["--output", str(tmp_path / "mix.png"), "--batch-size", "8", "--rows", "3"])
    assert Image.open(tmp_path / "mix.png").format == "PNG"
    assert "wrote" in capsys.readouterr().out


def test_demo_on_an_image_folder(tmp_path):
    from tmix_aug import TransformMix
    from tmix_aug.synthetic import SyntheticObjects

    dataset = SyntheticObjects(8, image_size=16, num_classes=4)
    for i in range(len(dataset)):
        image, label = dataset[i]
        (tmp_path / "imgs" / f"c{label}").mkdir(parents=True, exist_ok=True)
        image.save(tmp_path / "imgs" / f"c{label}" / f"{i}.png")
    TransformMix(4, mode="saliency-softmax").save_pretrained(tmp_path / "mixer")
    demo.main(["--mixer", str(tmp_path / "mixer"), "--images", str(tmp_path / "imgs"), "--output", str(tmp_path / "m.png"), "--batch-size", "4"])
    assert Image.open(tmp_path / "m.png").size[0] > 0
