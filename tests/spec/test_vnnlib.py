"""VNN-LIB reading: the ACAS Xu properties, the constructs VNN-COMP files use, and errors with lines."""
from __future__ import annotations

import textwrap

import numpy as np
import pytest

from certprune.errors import PropertyError
from certprune.spec.vnnlib import check_matches, parse_vnnlib, read_vnnlib

HEADER = "\n".join([f"(declare-const X_{i} Real)" for i in range(2)] + [f"(declare-const Y_{j} Real)" for j in range(3)])
BOX = "(assert (>= X_0 -1))\n(assert (<= X_0 1))\n(assert (>= X_1 0))\n(assert (<= X_1 0.5))\n"


def parse(body: str, header: str = HEADER):
    return parse_vnnlib(header + "\n" + textwrap.dedent(body), "t.vnnlib")


def only_disjunct(prop):
    assert len(prop.disjuncts) == 1
    return prop.disjuncts[0]


def holds(constraints, y) -> bool:
    return any(np.all(A @ y <= b) for A, b in constraints)


# ---- ACAS Xu ---------------------------------------------------------------------------------------

def test_every_acasxu_property_parses(acasxu_dir):
    files = sorted((acasxu_dir / "vnnlib").glob("*.vnnlib"))
    assert files
    for path in files:
        prop = read_vnnlib(path)
        check_matches(prop, 5, 5)
        d = only_disjunct(prop)
        assert d.lower.dtype == np.float64 and d.lower.shape == (5,)
        assert np.all(d.lower <= d.upper)
        assert len(d.constraints) == 1


def test_acasxu_property_1_and_2_values(acasxu_dir):
    p1 = only_disjunct(read_vnnlib(acasxu_dir / "vnnlib" / "prop_1.vnnlib"))
    np.testing.assert_array_equal(p1.lower, [0.6, -0.5, -0.5, 0.45, -0.5])
    np.testing.assert_array_equal(p1.upper, [0.679857769, 0.5, 0.5, 0.5, -0.45])
    (A, b), = p1.constraints
    np.testing.assert_array_equal(A, [[-1, 0, 0, 0, 0]])  # Y_0 >= 3.99...  <=>  -Y_0 <= -3.99...
    np.testing.assert_array_equal(b, [-3.991125645861615])
    (A, b), = only_disjunct(read_vnnlib(acasxu_dir / "vnnlib" / "prop_2.vnnlib")).constraints
    # "COC is maximal": Y_j <= Y_0 for j = 1..4 (all at once)
    np.testing.assert_array_equal(A, [[-1, 1, 0, 0, 0], [-1, 0, 1, 0, 0], [-1, 0, 0, 1, 0], [-1, 0, 0, 0, 1]])
    np.testing.assert_array_equal(b, np.zeros(4))


def test_point_coordinate_from_prop_4(acasxu_dir):
    d = only_disjunct(read_vnnlib(acasxu_dir / "vnnlib" / "prop_4.vnnlib"))
    assert d.lower[2] == d.upper[2] == 0.0


# ---- constructs ------------------------------------------------------------------------------------

def test_linear_output_terms():
    d = only_disjunct(parse(BOX + """
        (assert (>= (+ Y_0 (* -1 Y_1)) 0))
        (assert (<= (- Y_2 Y_0 (* 2 Y_1)) (/ 1 2)))
        (assert (< (* 3 (- Y_1)) 1.5e-1))
        """))
    (A, b), = d.constraints
    np.testing.assert_allclose(A, [[-1, 1, 0], [-1, -2, 1], [0, -3, 0]])
    np.testing.assert_allclose(b, [0, 0.5, 0.15])


def test_scaled_and_equal_input_bounds_and_comments():
    d = only_disjunct(parse("""
        ; a comment (with parentheses) that must be ignored
        (assert (<= (* 2 X_0) 1))   ; X_0 <= 0.5
        (assert (>= (* -4 X_0) 4))  ; X_0 <= -1 ... tighter
        (assert (>= X_0 -3))
        (assert (= X_1 0.25))
        (assert (<= Y_0 Y_1))
        """))
    np.testing.assert_array_equal(d.lower, [-3, 0.25])
    np.testing.assert_array_equal(d.upper, [-1, 0.25])


def test_chained_comparison_bounds_an_input():
    d = only_disjunct(parse("(assert (<= -1 X_0 2))\n(assert (<= 0 X_1 1))\n(assert (>= Y_0 1))"))
    np.testing.assert_array_equal(d.lower, [-1, 0])
    np.testing.assert_array_equal(d.upper, [2, 1])


def test_output_disjunction_is_grouped_under_one_box():
    d = only_disjunct(parse(BOX + "(assert (or (and (>= Y_1 Y_0)) (and (>= Y_2 Y_0) (<= Y_2 3))))"))
    assert len(d.constraints) == 2
    assert holds(d.constraints, np.array([0.0, 1.0, -5.0]))
    assert holds(d.constraints, np.array([0.0, -1.0, 2.0]))
    assert not holds(d.constraints, np.array([0.0, -1.0, 4.0]))
    assert not holds(d.constraints, np.array([1.0, 0.0, 0.0]))


def test_top_level_or_of_input_boxes():
    prop = parse("""
        (assert (or
            (and (>= X_0 0) (<= X_0 1) (>= X_1 0) (<= X_1 1) (<= Y_0 Y_1))
            (and (>= X_0 2) (<= X_0 3) (>= X_1 0) (<= X_1 1) (<= Y_0 Y_2))
            (and (>= X_0 0) (<= X_0 1) (>= X_1 0) (<= X_1 1) (>= Y_0 10))))
        """)
    assert len(prop.disjuncts) == 2
    first, second = prop.disjuncts
    np.testing.assert_array_equal(first.lower, [0, 0])
    np.testing.assert_array_equal(second.upper, [3, 1])
    assert len(first.constraints) == 2 and len(second.constraints) == 1


def test_or_of_input_ranges_splits_the_box_and_drops_empty_cases():
    prop = parse("""
        (assert (>= X_0 -1)) (assert (<= X_0 0.5)) (assert (>= X_1 0)) (assert (<= X_1 1))
        (assert (or (<= X_0 0) (>= X_0 1)))
        (assert (>= Y_0 0))
        """)
    d = only_disjunct(prop)  # the case X_0 >= 1 is empty against X_0 <= 0.5
    np.testing.assert_array_equal([d.lower[0], d.upper[0]], [-1, 0])


def test_no_output_constraint_means_any_output():
    (A, b), = only_disjunct(parse(BOX)).constraints
    assert A.shape == (0, 3) and holds([(A, b)], np.zeros(3))


def test_constant_comparisons():
    assert only_disjunct(parse(BOX + "(assert (<= 0 1))\n(assert (>= Y_0 0))")).constraints[0][0].shape == (1, 3)
    assert parse(BOX + "(assert (or (>= 0 1) (>= Y_1 0)))").disjuncts[0].constraints[0][0].tolist() == [[0, -1, 0]]


def test_check_matches():
    prop = parse(BOX)
    check_matches(prop, 2, 3)
    with pytest.raises(PropertyError, match="property declares 2 inputs, model has 784"):
        check_matches(prop, 784, 3)
    with pytest.raises(PropertyError, match="declares 3 outputs, model has 10"):
        check_matches(prop, 2, 10)


def test_many_inputs_parse_quickly():
    n = 3072
    lines = [f"(declare-const X_{i} Real)" for i in range(n)] + [f"(declare-const Y_{j} Real)" for j in range(10)]
    lines += [f"(assert (<= X_{i} {0.5 + i * 1e-4}))\n(assert (>= X_{i} 0.0))" for i in range(n)]
    lines.append("(assert (or " + " ".join(f"(and (>= Y_{j} Y_3))" for j in range(10) if j != 3) + "))")
    d = only_disjunct(parse_vnnlib("\n".join(lines)))
    assert d.lower.shape == (n,) and len(d.constraints) == 9


# ---- errors ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("body, message", [
    ("(assert (<= X_0 1)", r"t.vnnlib line \d+: '\(' is never closed"),
    ("(assert (<= X_0 1)))", r"line \d+: unexpected '\)'"),
    ("(assert (<= X_0 Z_3))", r"line \d+: unknown identifier 'Z_3'"),
    ("(assert (<= X_0 abc))", r"unknown identifier 'abc'"),
    ("(assert (<= X_7 1))", r"unknown identifier 'X_7'"),
    ("(assert (<= X_0 Y_0))", "may not mix inputs X_i and outputs Y_j"),
    ("(assert (<= (+ X_0 X_1) 1))", r"several inputs \(X_0, X_1\)"),
    ("(assert (<= (* Y_0 Y_1) 1))", "non-linear"),
    ("(assert (not (<= Y_0 1)))", "unknown operator 'not'"),
    ("(assert (<= Y_0))", "needs at least two terms"),
    ("(assert (<= Y_0 1) (<= Y_1 1))", "assert takes one formula, got 2"),
    ("(define-fun f () Real 1)", "unknown command 'define-fun'"),
    ("X_0", "unexpected token 'X_0' outside parentheses"),
    ("(declare-const X_0 Real)", r"'X_0' is declared twice \(first on line 1\)"),
    ("(declare-const Z Real)", "'Z' is neither an input X_i nor an output Y_j"),
    ("(declare-const Y_3 Int)", "sort 'Int', expected Real"),
])
def test_errors_name_file_line_and_token(body, message):
    with pytest.raises(PropertyError, match=message):
        parse(BOX + body)


def test_error_line_number_is_the_offending_line():
    with pytest.raises(PropertyError, match=r"^t.vnnlib line 11: unknown identifier 'Y_9'$"):
        parse(BOX + "\n(assert (<= Y_9 0))")  # 5 header lines, 4 box lines, 1 blank line


def test_input_without_both_bounds():
    with pytest.raises(PropertyError, match="line 2: input X_1 has no upper bound"):
        parse("(assert (>= X_0 0)) (assert (<= X_0 1)) (assert (>= X_1 0)) (assert (>= Y_0 0))")
    with pytest.raises(PropertyError, match="input X_0 has no lower bound"):
        parse("(assert (<= X_0 1)) (assert (<= X_1 1)) (assert (>= X_1 0))")


def test_gap_in_declared_indices():
    with pytest.raises(PropertyError, match="X_1 is not declared but X_2 is"):
        parse("(assert (<= 0 X_0 1))", header="(declare-const X_0 Real)\n(declare-const X_2 Real)")


def test_every_box_empty():
    with pytest.raises(PropertyError, match="every input box is empty"):
        parse("(assert (<= 0 X_0 1)) (assert (<= 2 X_1 1))")


def test_missing_file(tmp_path):
    with pytest.raises(PropertyError, match="cannot read property file"):
        read_vnnlib(tmp_path / "absent.vnnlib")


@pytest.mark.parametrize("name", ["p.vnnlib", "p.yaml"])
def test_binary_property_file_is_one_line_error(tmp_path, capsys, name):
    from certprune.cli.main import main
    from tests.conftest import MODELS

    path = tmp_path / name
    path.write_bytes(b"\x89PNG\x00\xff\xfe")
    assert main(["verify", str(MODELS / "mnist_mlp_100x2.onnx"), "--property", str(path)]) == 2
    err = capsys.readouterr().err
    assert "not a text file" in err and "Traceback" not in err


def test_a_byte_order_mark_is_not_part_of_the_text(tmp_path):
    """Files saved by Excel or Notepad start with a UTF-8 BOM: VNN-LIB, instances CSVs and JSON read the same."""
    from certprune.spec.text import read_text
    from certprune.spec.vnnlib import read_vnnlib

    text = "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (>= X_0 0.0))\n(assert (<= X_0 1.0))\n" \
           "(assert (<= Y_0 0.0))\n"
    (tmp_path / "p.vnnlib").write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert read_text(tmp_path / "p.vnnlib") == text
    assert len(read_vnnlib(tmp_path / "p.vnnlib").disjuncts) == 1
