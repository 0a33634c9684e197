"""ros_seg messages built from Segmenter results: segment arrays, segmentation info, scaled camera info."""
from __future__ import annotations

from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header

from ros_seg.inference.result import SegmentationResult
from ros_seg.models.class_metadata import ClassMetadata
from ros_seg.msg import Segment, SegmentArray, SegmentationInfo


def segment_array(result: SegmentationResult, header: Header) -> SegmentArray:
    """The segments of `result`, indexing its panoptic map, under the source image's `header`."""
    height, width = result.panoptic.shape
    msg = SegmentArray(header=header, height=height, width=width)
    msg.segments = [
        Segment(
            id=s.id,
            class_id=s.class_id,
            class_name=s.class_name,
            is_thing=s.is_thing,
            score=s.score,
            area=s.area,
            bbox_x=s.bbox[0],
            bbox_y=s.bbox[1],
            bbox_width=s.bbox[2],
            bbox_height=s.bbox[3],
            centroid_x=s.centroid[0],
            centroid_y=s.centroid[1],
        )
        for s in result.segments
    ]
    return msg


def segmentation_info(metadata: ClassMetadata, model_name: str, header: Header) -> SegmentationInfo:
    """Class names, colors (packed 0xRRGGBB), thing flags and ignore id of a model's label set."""
    return SegmentationInfo(
        header=header,
        model_name=model_name,
        class_names=list(metadata.names),
        class_colors=[(r << 16) | (g << 8) | b for r, g, b in metadata.colors],
        is_thing=list(metadata.is_thing),
        ignore_id=metadata.ignore_id,
    )


def scaled_camera_info(info: CameraInfo, height: int, width: int, header: Header) -> CameraInfo:
    """`info` rescaled to an image of `height` x `width` pixels, under `header`.

    Focal lengths, principal point and the projection's translation scale with
    the image (as image_proc's resize does); distortion is unchanged.
    """
    sx, sy = width / info.width, height / info.height
    k = list(info.k)
    k[0], k[2], k[4], k[5] = k[0] * sx, k[2] * sx, k[4] * sy, k[5] * sy
    p = list(info.p)
    p[0], p[2], p[3], p[5], p[6] = p[0] * sx, p[2] * sx, p[3] * sx, p[5] * sy, p[6] * sy
    scaled = CameraInfo(
        header=header,
        height=height,
        width=width,
        distortion_model=info.distortion_model,
        d=info.d,
        k=k,
        r=info.r,
        p=p,
        binning_x=info.binning_x,
        binning_y=info.binning_y,
    )
    roi = info.roi
    scaled.roi.x_offset, scaled.roi.width = round(roi.x_offset * sx), round(roi.width * sx)
    scaled.roi.y_offset, scaled.roi.height = round(roi.y_offset * sy), round(roi.height * sy)
    scaled.roi.do_rectify = roi.do_rectify
    return scaled
