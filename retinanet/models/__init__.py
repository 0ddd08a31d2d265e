"""The network and what turns its outputs into losses and detections: backbone, FPN, heads, anchors, box coding, loss, post-processing; and the checkpoint format that describes and rebuilds it."""
