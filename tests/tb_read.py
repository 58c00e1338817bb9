"""Reads a TensorBoard log directory with tensorboard's own readers and prints what TensorBoard would show.

    tb_read.py LOGDIR [--plugin]

Prints one JSON object: {"scalars": {tag: [[step, value], ...]}, "hparams": {name: value}, "metrics": [tag, ...]}.
By default the scalars come from the legacy EventAccumulator, with purge_orphaned_data on (TensorBoard's default):
it drops what a restarted run logged again at every SessionLog START. With --plugin they come from the plugin
accumulator that `tensorboard --load_fast=false` uses, which ignores a run's first START; the hyperparameters are
read from the HParams plugin's session_start_info and experiment records (legacy reader only).
"""
import json, sys

from tensorboard.backend.event_processing import event_accumulator, plugin_event_accumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.util import tensor_util

out = {"scalars": {}, "hparams": {}, "metrics": []}
if "--plugin" in sys.argv[2:]:
    acc = plugin_event_accumulator.EventAccumulator(
        sys.argv[1], size_guidance={"tensors": 0}, purge_orphaned_data=True
    )
    acc.Reload()
    for tag in acc.Tags()["tensors"]:
        if acc.SummaryMetadata(tag).plugin_data.plugin_name != "scalars":
            continue
        out["scalars"][tag] = [[e.step, float(tensor_util.make_ndarray(e.tensor_proto).item())] for e in acc.Tensors(tag)]
    print(json.dumps(out))
    sys.exit(0)

acc = event_accumulator.EventAccumulator(sys.argv[1], size_guidance={"scalars": 0}, purge_orphaned_data=True)
acc.Reload()
for tag in acc.Tags()["scalars"]:
    out["scalars"][tag] = [[e.step, e.value] for e in acc.Scalars(tag)]
try:
    hp = acc.PluginTagToContent("hparams")
except KeyError:
    hp = {}
for tag, content in hp.items():
    data = plugin_data_pb2.HParamsPluginData.FromString(content)
    if data.HasField("session_start_info"):
        for k, v in data.session_start_info.hparams.items():
            out["hparams"][k] = getattr(v, v.WhichOneof("kind"))
    if data.HasField("experiment"):
        out["metrics"] = [m.name.tag for m in data.experiment.metric_infos]
print(json.dumps(out))
