"""Frames are sent several at a time, in bounded chunks."""

from app.streaming.stream import MAX_CHUNK_BYTES, group_frames


def test_group_frames_keeps_order_and_bounds_each_chunk() -> None:
    frames = [
        bytes([65 + index % 26]) * (index * 997 % 9000 + 1) for index in range(400)
    ]

    chunks = list(group_frames(frames))

    assert b"".join(chunks) == b"".join(frames)
    assert all(len(chunk) <= MAX_CHUNK_BYTES for chunk in chunks)
    assert len(chunks) < len(frames)


def test_group_frames_sends_an_oversized_frame_alone() -> None:
    big = b"x" * (MAX_CHUNK_BYTES * 3)

    chunks = list(group_frames([b"a", big, b"b"]))

    assert chunks == [b"a", big, b"b"]
