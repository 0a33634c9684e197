"""The segmentation node as a lifecycle (managed) node, for stacks that bring their nodes up in order.

    segmentation_lifecycle_node --ros-args -p weights:=pem_stdc1.pt -p autostart:=false
    ros2 lifecycle set /segmentation_node configure   # loads the model (fails cleanly: stays unconfigured)
    ros2 lifecycle set /segmentation_node activate    # subscribes, segments, publishes

- configure: reads and checks the parameters, loads the model, makes the
  publishers (the outputs are lifecycle publishers; segmentation_info and
  /diagnostics publish in every state). A bad parameter or weights file fails
  the transition with the reason logged; the node stays unconfigured.
- activate: subscribes to the image topics and starts the worker.
- deactivate: unsubscribes, stops the worker after its frame, and returns the
  GPU memory PyTorch's allocator caches.
- cleanup: destroys the publishers and unloads the model.
- shutdown: all of that from whatever state the node is in.

With the parameter `autostart` (default true) the node configures and
activates itself at start, and exits with code 2 when configuring fails, as
the plain node does.
"""
from __future__ import annotations

import gc
import sys

import torch
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from ros_seg.ros.segmentation_node import NODE_NAME, SegmentationWork, StartupError, run_node


class ManagedSegmentationNode(SegmentationWork, LifecycleNode):
    """The segmentation node with the managed-node lifecycle.

    Args:
        node_name: name of the node (remappable with `__node:=`).
        **kwargs: passed to rclpy.lifecycle.LifecycleNode (context, parameter_overrides, ...).

    Raises:
        StartupError: a parameter is invalid, or with autostart the model cannot be loaded.
    """

    def __init__(self, node_name: str = NODE_NAME, **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self._prepare()
        autostart = self.declare_parameter(
            "autostart", True, ParameterDescriptor(description="Configure and activate at start.", read_only=True)
        ).value
        if autostart:
            if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                raise StartupError(self._failure)
            self.trigger_activate()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._load()
        except StartupError as exc:
            self._failure = str(exc)
            self.get_logger().error(f"cannot configure: {exc}")
            self.segmenter = None
            return TransitionCallbackReturn.FAILURE
        self._open_outputs(self.create_lifecycle_publisher)
        self.get_logger().info(f"configured: {self.segmenter.model_name} on {self.segmenter.device}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        topic = self._open_input()
        self._start_worker()
        self._log_started(topic)
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._close_input()
        self._stop_worker()
        self._release_cached_memory()
        self.get_logger().info("deactivated: not subscribed, not segmenting")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._close_outputs()
        self.segmenter = None
        self.settings = self.runtime = None
        self._release_cached_memory()
        self.get_logger().info("cleaned up: model unloaded")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._close_input()
        self._stop_worker()
        self._close_outputs()
        self.segmenter = None
        return TransitionCallbackReturn.SUCCESS

    def _release_cached_memory(self) -> None:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def destroy_node(self) -> None:
        """Stop the worker (after its frame, unless stop_waiting() was called), then destroy the node."""
        self._stop_worker()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Run the managed segmentation node until Ctrl-C or SIGTERM; 2 when it cannot start."""
    return run_node(ManagedSegmentationNode, args)


if __name__ == "__main__":
    sys.exit(main())
