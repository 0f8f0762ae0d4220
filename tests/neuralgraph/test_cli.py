from neuralgraph.cli import main


def test_inspect_prints_groups_and_verifies(capsys):
    assert main(["inspect", "fm16", "--trials", "2"]) == 0
    out = capsys.readouterr().out
    assert "fc.0" in out and "95 nodes, 2057 edges, 14378 parameters" in out
    assert "PASSED" in out


def test_inspect_without_verify_and_list(capsys):
    assert main(["inspect", "mlp", "--no-verify", "--lpe", "0"]) == 0
    assert "positional" not in capsys.readouterr().out
    assert main(["list"]) == 0
    assert "sequential" in capsys.readouterr().out


def test_bad_arch_is_an_error_message(capsys):
    assert main(["inspect", "mlp", "--arch", "nope"]) == 2
    assert "no converter is registered as 'nope'" in capsys.readouterr().err
