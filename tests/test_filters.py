"Bad-input cases of sma_kit.filters that are awkward to set up in the notebook."
import os, pickle, sys
from pathlib import Path

import pytest

from sma_kit.filters import CorpusError, FilterConfig, FilterReport, check_text, filter_files, read_text

GOOD = "".join(f"def function_{i}(value):\n    return value * {i} + {i * i}\n\n" for i in range(20))


def test_read_text_missing_file_raises_oserror(tmp_path):
    with pytest.raises(FileNotFoundError) as e: read_text(tmp_path / "nope.txt")
    assert "nope.txt" in str(e.value)


def test_read_text_nul_after_sniff_window_is_text_but_check_text_flags_it(tmp_path):
    p = tmp_path / "late_nul.py"
    p.write_bytes(b"# " + b"a" * 9000 + b"\x00\n")
    text = read_text(p)                      # only the first 8 KB are sniffed
    assert text.endswith("\x00\n") and check_text(text) == "binary"


def test_read_text_late_invalid_utf8_reports_offset(tmp_path):
    p = tmp_path / "late.txt"
    p.write_bytes(b"a" * 10_000 + b"\xff")
    with pytest.raises(CorpusError) as e: read_text(p)
    assert str(p) in str(e.value) and "offset 10000" in str(e.value) and "0xff" in str(e.value)
    assert e.value.reason == "not_utf8"


def test_read_text_utf16_is_binary(tmp_path):
    p = tmp_path / "u16.txt"
    p.write_bytes("hello world".encode("utf-16"))
    with pytest.raises(CorpusError) as e: read_text(p)
    assert e.value.reason == "binary" and str(p) in str(e.value)


def test_read_text_bom_only_and_empty(tmp_path):
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbf")
    (tmp_path / "empty.txt").write_bytes(b"")
    assert read_text(tmp_path / "bom.txt") == "" == read_text(tmp_path / "empty.txt")


def test_corpus_error_is_value_error_and_picklable():
    e = pickle.loads(pickle.dumps(CorpusError("f: bad", reason="not_utf8")))
    assert isinstance(e, ValueError) and e.reason == "not_utf8" and str(e) == "f: bad"


def test_check_text_unknown_kind_and_empty():
    with pytest.raises(ValueError): check_text(GOOD, "rust")
    assert check_text("", "prose") == "too_short"
    assert check_text("\n" * 200, "code") == "too_short"


def test_check_text_deeply_nested_python_is_syntax_error_not_crash():
    nested = GOOD + "x = " + "(\n" * 250 + "1" + "\n)" * 250 + "\n"     # beyond the parser's nesting limit
    assert check_text(nested) == "syntax_error"
    assert check_text(GOOD + "x = " + "(\n" * 50 + "1" + "\n)" * 50 + "\n") is None


def test_check_text_python2_source_is_syntax_error():
    assert check_text(GOOD + "print 'hello'\n") == "syntax_error"


def test_check_text_invalid_escape_warning_is_silent(recwarn):
    assert check_text(GOOD + "PATTERN = '\\d+ items'\n") is None
    assert not [w for w in recwarn if issubclass(w.category, (SyntaxWarning, DeprecationWarning))]


def test_check_text_long_hex_digits_only_and_rulers():
    assert check_text(GOOD + "N = " + "1234567890" * 7 + "\n") is None        # a long decimal number is not a blob
    assert check_text(GOOD + "MASK = 0b" + "01" * 40 + "\n") is None           # nor a binary literal ('b' is hex)
    assert check_text(GOOD + "# " + "a" * 120 + "\n") is None                  # nor filler
    assert check_text(GOOD + "# " + "+" * 120 + "\n") is None                  # a ruler is not base64
    assert check_text(GOOD + "H = '" + "9f86d081884c7d65" * 4 + "'\n") == "hex_run"
    assert check_text(GOOD + "H = '" + "9F86D081884C7D65" * 4 + "'\n") == "hex_run"   # upper-case hex too


def test_prose_long_line_opt_in():
    text = "word " * 500
    assert check_text(text, "prose") is None
    assert check_text(text, "prose", FilterConfig(prose_max_line_len=1000)) == "long_line"


def test_filter_files_bad_inputs_never_crash(tmp_path):
    (tmp_path / "good.py").write_text(GOOD)
    (tmp_path / "empty.py").write_bytes(b"")
    (tmp_path / "u16.py").write_bytes(GOOD.encode("utf-16"))
    (tmp_path / "cp1252.py").write_bytes(("# \u201cquoted\u201d\n" + GOOD).encode("cp1252"))
    (tmp_path / "adir.py").mkdir()
    paths = [tmp_path / n for n in ["good.py", "empty.py", "u16.py", "cp1252.py", "adir.py", "missing.py"]]
    paths += [str(tmp_path / "good.py")]                      # the same file twice (str and Path)
    for num_proc in (1, 2):
        kept, rep = filter_files(paths, "python", num_proc=num_proc)
        assert [p.name for p, _ in kept] == ["good.py"]
        reasons = {Path(p).name: r for p, r in rep.reasons.items()}
        assert reasons == {"good.py": None, "empty.py": "too_short", "u16.py": "binary", "cp1252.py": "not_utf8",
                           "adir.py": "unreadable", "missing.py": "unreadable"}
        assert str(tmp_path / "cp1252.py") in rep.details[str(tmp_path / "cp1252.py")]


def test_filter_files_oversized_file_is_not_read(tmp_path):
    p = tmp_path / "huge.py"
    with open(p, "wb") as f: f.truncate(5000)                 # sparse file of NUL bytes, larger than 4 * max_chars
    _, rep = filter_files([p], cfg=FilterConfig(min_chars=10, max_chars=1000), num_proc=1)
    assert rep.reasons[str(p)] == "too_long"


def test_filter_files_exact_duplicates_keep_sorted_first(tmp_path):
    for n in ("b.py", "a.py", "c.py"): (tmp_path / n).write_text(GOOD)
    kept, rep = filter_files(sorted(tmp_path.iterdir(), reverse=True), num_proc=1)
    assert [p.name for p, _ in kept] == ["a.py"]
    assert rep.counts == {"near_duplicate": 2} and rep.details[str(tmp_path / "c.py")] == str(tmp_path / "a.py")


def test_filter_files_unknown_kind(tmp_path):
    with pytest.raises(ValueError): filter_files([tmp_path / "x.py"], "cobol")


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="root can read anything")
def test_filter_files_permission_denied(tmp_path):
    p = tmp_path / "secret.py"; p.write_text(GOOD); p.chmod(0)
    try: _, rep = filter_files([p], num_proc=1)
    finally: p.chmod(0o644)
    assert rep.reasons[str(p)] == "unreadable"


def test_report_from_dict_ignores_derived_fields():
    rep = FilterReport("code", {"x": None, "y": "too_short"})
    d = rep.to_dict()
    assert d["total"] == 2 and d["kept"] == 1 and FilterReport.from_dict(d) == rep
    assert "kept 1 of 2" in str(rep) and "too_short" in repr(rep)
