"""`medattn models`: every registered network listed with its parameter counts, as a table or JSON."""

from __future__ import annotations

import json

from medattn.cli.main import main
from medattn.models import available, create


def test_models_json_lists_every_network_with_its_parameter_count(capsys):
    assert main(["models", "--json", "--in-channels", "4", "--out-channels", "3"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in rows] == available()
    agunet = next(row for row in rows if row["name"] == "agunet")
    assert agunet["parameters_3d"] == create("agunet", 3, 4, 3).parameter_count()
    assert agunet["parameters_2d"] == create("agunet", 2, 4, 3).parameter_count()
    assert agunet["deep_supervision"] is True and agunet["description"]


def test_models_table(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("agunet", "daunet", "msga", "monai.unet", "monai.swin_unetr"):
        assert name in out
