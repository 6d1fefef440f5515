"""benchmarks.teacher_choice: the alternative teacher (raw best inside the best smoothed window), by hand."""

from benchmarks.teacher_choice import window_teacher


def test_window_teacher_ignores_a_spike_outside_the_best_window():
    # RTE-like: a first-evaluation spike (0.66) then a best window (0.62, 0.61) at steps 4-5.
    assert window_teacher([(1, 0.66), (2, 0.55), (3, 0.60), (4, 0.62), (5, 0.61), (6, 0.60)]) == 4


def test_window_teacher_ties_go_to_the_first_window_and_point():
    assert window_teacher([(1, 0.5), (2, 0.7), (3, 0.7), (4, 0.6)]) == 2
    assert window_teacher([(10, 0.8), (20, 0.8)]) == 10
