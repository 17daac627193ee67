"""One Preprocessor used from two threads: the runs take turns and give the serial results;
a second run nested in the same thread raises a clear error."""

import threading
import time

import pytest
import torch

from wanprep_torch import Preprocessor, Result


@pytest.fixture(scope="module")
def pre(models):
    return Preprocessor(models["det"], models["pose"], progress=False, gate="off", chunk_size=4)


def test_two_threads_take_turns(pre, clip):
    frames = clip.frames[:8]
    other = clip.frames[4:12].flip(0).contiguous()  # a different video in the other thread
    want = {0: pre(frames), 1: pre(other)}
    results, errors = {}, []
    start = threading.Barrier(2)

    def worker(i, video):
        try:
            start.wait()
            got = []
            for part in pre.stream(video):
                time.sleep(0.01)  # give the other thread every chance to interleave
                got.append(part)
            results[i] = got
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(0, frames)), threading.Thread(target=worker, args=(1, other))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    for i in (0, 1):
        got = Result.concat(results[i])
        assert torch.equal(got.keypoints, want[i].keypoints)
        assert torch.equal(got.face_images, want[i].face_images)
        assert got.face_bboxes == want[i].face_bboxes


def test_runs_do_not_interleave(pre, clip):
    """While one thread's stream is open, the other thread's run waits for it to finish."""
    frames = clip.frames[:8]
    events = []
    first_part = threading.Event()

    def first():
        for part in pre.stream(frames):
            events.append(("A", part.start))
            first_part.set()
            time.sleep(0.5)
        events.append(("A", "end"))

    def second():
        first_part.wait(timeout=120)
        pre(frames)
        events.append(("B", "end"))

    ta, tb = threading.Thread(target=first), threading.Thread(target=second)
    ta.start()
    tb.start()
    ta.join(timeout=300)
    tb.join(timeout=300)
    assert events[-1] == ("B", "end") and events[-2] == ("A", "end")


def test_nested_run_in_one_thread_is_a_clear_error(pre, clip):
    frames = clip.frames[:8]
    g = pre.stream(frames)
    next(g)
    with pytest.raises(RuntimeError, match="already running in this thread"):
        pre(frames)
    with pytest.raises(RuntimeError, match="already running"):
        pre.model_inputs(frames[:1], torch.tensor([[0.0, 0.0, 10.0, 10.0]]))
    g.close()  # closing the stream frees the Preprocessor
    assert len(pre(frames[:4])) == 4


def test_interrupt_from_the_callback_frees_the_preprocessor(models, clip):
    """A host app's interrupt (an exception from progress_callback, as ComfyUI's) ends the run
    and leaves the Preprocessor usable, from this thread and from another."""

    class Interrupted(Exception):
        pass

    calls = []

    def cb(stage, done, total):
        calls.append(done)
        if len(calls) == 1:
            raise Interrupted

    pre = Preprocessor(models["det"], models["pose"], progress=False, gate="off", chunk_size=4, progress_callback=cb)
    with pytest.raises(Interrupted):
        pre(clip.frames[:8])
    assert len(pre(clip.frames[:4])) == 4
    got = []
    t = threading.Thread(target=lambda: got.append(len(pre(clip.frames[:4]))))
    t.start()
    t.join(timeout=120)
    assert got == [4]
