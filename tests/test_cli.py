"""Every `keras-vit` command answers --help and rejects an unknown flag with a clear message."""

import pytest

from keras_vit import cli


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_help_and_unknown_flags(command, capsys):
    assert cli.main(["keras-vit", command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: keras-vit {command}")
    assert cli.main(["keras-vit", command, "--no_such_flag=1"]) == 2
    err = capsys.readouterr().err
    assert "no_such_flag" in err and f"keras-vit {command} --help" in err


@pytest.mark.parametrize("command", ["train", "demo", "pretrain", "summary", "variants"])
def test_commands_without_positional_arguments_reject_them(command, capsys):
    assert cli.main(["keras-vit", command, "stray.png"]) == 2
    assert "takes no positional arguments" in capsys.readouterr().err


def test_unknown_command_lists_the_commands(capsys):
    assert cli.main(["keras-vit", "trian"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'trian'" in err and all(name in err for name in cli.COMMANDS)


def test_variants_lists_plain_and_hybrid_models(capsys):
    assert cli.main(["keras-vit", "variants"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 + 9 + 2
    assert lines[5].split()[:2] == ["B/16", "ViT_B16"] and lines[5].endswith("-")
    assert lines[-2].split()[:2] == ["R50+B/16", "ViT_R50_B16"] and lines[-2].endswith("(3, 4, 9)")
