import pytest

from pipeline.a2d.videoset import VideoRecord, read_videoset, write_videoset
from pipeline.errors import DataError

ROW = "--h5fAKYurM,43,00:00:00,00:00:06,320,568,181,3,0"


def test_parse_example_row(tmp_path):
    p = tmp_path / "videoset.csv"
    p.write_text(ROW + "\nabc_DEF-123,11,00:00:01,00:00:09,320,426,90,5,1\n")
    recs = read_videoset(p)
    assert recs[0] == VideoRecord("--h5fAKYurM", 43, "00:00:00", "00:00:06", 320, 568, 181, 3,
                                  False)
    assert recs[0].split == "train" and recs[1].split == "test"


def test_round_trip(tmp_path):
    recs = [VideoRecord("-a", 11, "00:00:00", "00:00:02", 320, 480, 24, 1, True),
            VideoRecord("b_", 79, "00:01:00", "00:01:02", 320, 568, 332, 5, False)]
    p = tmp_path / "v.csv"
    write_videoset(p, recs)
    assert read_videoset(p) == recs
    assert not list(tmp_path.glob("*.tmp.*"))


@pytest.mark.parametrize("row, problem", [
    ("a,11,00:00:00,00:00:06,320,568,181,3", "expected 9"),
    ("a,11,00:00:00,00:00:06,320,568,x,3,0", "non-integer"),
    ("a,14,00:00:00,00:00:06,320,568,181,3,0", "not one of the 43"),
    ("a,11,00:00:00,00:00:06,320,568,181,3,2", "test flag"),
    ("../etc,11,00:00:00,00:00:06,320,568,181,3,0", "outside the dataset"),
    ("a/b,11,00:00:00,00:00:06,320,568,181,3,0", "outside the dataset"),
    ("a,11,0:0,00:00:06,320,568,181,3,0", "HH:MM:SS"),
    ("a,11,00:00:00,00:00:06,320,0,181,3,0", "width must be positive"),
])
def test_bad_rows_name_file_and_line(tmp_path, row, problem):
    p = tmp_path / "videoset.csv"
    p.write_text(ROW + "\n" + row + "\n")
    with pytest.raises(DataError, match=problem) as err:
        read_videoset(p)
    assert f"{p}:2" in str(err.value)


def test_duplicate_and_empty(tmp_path):
    p = tmp_path / "videoset.csv"
    p.write_text(ROW + "\n" + ROW + "\n")
    with pytest.raises(DataError, match="duplicate"):
        read_videoset(p)
    p.write_text("\n")
    with pytest.raises(DataError, match="no videos"):
        read_videoset(p)
    with pytest.raises(DataError, match="not found"):
        read_videoset(tmp_path / "missing.csv")
