"""Pictures of detections: labels placed where they hide no other label, on the image."""
import itertools

import numpy as np

from retinanet.visualize import _overlap, draw_boxes, draw_detections, place_label


def test_labels_of_boxes_at_one_place_do_not_cover_one_another():
    occupied = []
    image = np.zeros((200, 300, 3), np.uint8)
    draw_boxes(image, [[50, 60, 120, 80]] * 3, ["star", "ring", "disc"], (255, 0, 0), scores=[0.9, 0.8, 0.7],
               occupied=occupied)
    assert len(occupied) == 3
    assert all(_overlap(a, b) == 0 for a, b in itertools.combinations(occupied, 2))
    assert occupied[0][3] == 60  # the most confident gets the first place: just above its box


def test_prediction_labels_leave_the_ground_truths_visible():
    occupied = []
    image = np.zeros((200, 300, 3), np.uint8)
    draw_boxes(image, [[50, 60, 120, 80]], ["star"], (0, 255, 0), occupied=occupied)
    draw_boxes(image, [[52, 61, 118, 80]], ["star"], (255, 0, 0), scores=[0.9], occupied=occupied)
    assert _overlap(occupied[0], occupied[1]) == 0
    picture = draw_detections(image, [{"bbox": [52, 61, 118, 80], "score": 0.9, "category_id": 1}], {1: "star"},
                              ([[50, 60, 120, 80]], ["star"]), layout="overlay", title="photo.png")
    assert picture.shape[1] == image.shape[1] and picture.shape[0] > image.shape[0]  # the title bar on top


def test_labels_stay_on_the_image_at_its_edges():
    for box in ((0, 0, 40, 30), (260, 170, 300, 200), (-20, -10, 10, 5)):
        left, top, right, bottom = place_label(box, (60, 15), (200, 300), [])
        assert 0 <= left and right <= 300 and 0 <= top and bottom <= 200
