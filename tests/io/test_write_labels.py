"""The label table behind every written mask: user names and colours, defaults, refused specifications."""

from __future__ import annotations

import numpy as np
import pytest

from medattn.errors import WriteError
from medattn.io.label_table import GENERIC_ANATOMY_PALETTE, as_label_array, label_table


def test_named_and_present_labels_are_merged_in_value_order():
    table = label_table({"3": "lesion", 1: ("brain", (10, 20, 30)), 0: "background"}, present=[0, 2, 1])
    assert [(label.value, label.name) for label in table] == [(1, "brain"), (2, "label_2"), (3, "lesion")]
    assert table[0].color == (10, 20, 30) and table[0].color_given and table[0].name_given
    assert table[1].color == GENERIC_ANATOMY_PALETTE[1] and not table[1].name_given
    assert table[2].color == GENERIC_ANATOMY_PALETTE[2] and not table[2].color_given


def test_default_colours_are_distinct_and_stable_by_value():
    palette = [label.color for label in label_table(None, present=range(1, 17))]
    assert len(set(palette)) == 16
    assert label_table(None, present=[5])[0].color == palette[4]


@pytest.mark.parametrize(
    ("labels", "words"),
    [
        ({-1: "x"}, "non-negative"),
        ({"one": "x"}, "non-negative"),
        ({1: ("x", (256, 0, 0))}, "0-255"),
        ({1: ("x", (0.5, 0.2, 0.1))}, "0-255"),
        ({1: ""}, "non-empty"),
        ({1: "two\nlines"}, "one line"),
        ({1: ("x", (1, 2, 3), "extra")}, "name or"),
    ],
)
def test_bad_label_specifications_are_refused(labels, words):
    with pytest.raises(WriteError, match=words):
        label_table(labels, present=[1])


def test_label_arrays_use_the_smallest_unsigned_type():
    assert as_label_array(np.array([0, 1, 255])).dtype == np.uint8
    assert as_label_array(np.array([0.0, 256.0])).dtype == np.uint16
    assert as_label_array(np.array([True, False])).dtype == np.uint8
    np.testing.assert_array_equal(as_label_array(np.array([0.0, 2.0, 7.0])), [0, 2, 7])
