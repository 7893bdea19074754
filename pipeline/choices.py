"""Every choice tuple and engine default, declared once (standard library only, so config,
engine and Beam code all read the same values without pulling in TensorFlow or Beam)."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """One saliency method. ``computation`` names its engine function (the engine's
    methods.registry maps it); ``guided`` runs it on the guided-patched model; ``smooth``
    wraps it in SmoothGrad's noise tunnel (the mean over ``samples`` noisy copies of each
    image, noise ``noise``); ``options`` are the saliency config keys it reads."""

    name: str
    computation: str
    guided: bool = False
    smooth: bool = False
    options: tuple[str, ...] = ()


_SMOOTH = ("samples", "noise", "seed")
_IG = ("ig_steps", "ig_baseline")
# Every method, declared once. A new method is a line here; a new computation is also a
# module in engine/methods registered in engine/methods/registry.py, and a new option is
# also spelled out in config/saliency.py, the Explainer, explain() and engine/from_config.py.
METHOD_TABLE = (
    MethodSpec("vanilla", "gradient"),
    MethodSpec("guided", "gradient", guided=True),
    MethodSpec("smoothgrad", "gradient", smooth=True, options=_SMOOTH),
    MethodSpec("guided_smoothgrad", "gradient", guided=True, smooth=True, options=_SMOOTH),
    MethodSpec("integrated_gradients", "integrated_gradients", options=_IG),
    MethodSpec("gradcam", "gradcam", options=("gradcam_layer",)),
    MethodSpec("guided_gradcam", "gradcam", guided=True, options=("gradcam_layer",)),
)
METHOD_SPECS = {spec.name: spec for spec in METHOD_TABLE}
METHODS = tuple(METHOD_SPECS)
GUIDED_METHODS = tuple(s.name for s in METHOD_TABLE if s.guided)  # use the guided model
CAM_METHODS = tuple(s.name for s in METHOD_TABLE if s.computation == "gradcam")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16", "auto")
#  none: x (0..255 float)   unit: x/255   symmetric: x/127.5-1
#  caffe: RGB->BGR, minus ImageNet BGR mean   torch: x/255, minus mean, / std
#  auto: the keras.applications family's own preprocess_input (named models only)
PREPROCESSING_MODES = ("none", "unit", "symmetric", "caffe", "torch", "auto")
# labels_above: every class whose probability reaches saliency.threshold (multi-label heads;
# an image with none gets its top class), one record per (image, class).
TARGET_MODES = ("predicted", "label", "class", "top_k", "labels_above")
# model.head: how logits become probabilities. auto: sigmoid where the model ends in a sigmoid
# (multi-label), else softmax. Either head is stripped: maps are taken at the logits.
HEADS = ("auto", "softmax", "sigmoid")
IG_BASELINES = ("zeros", "black")
SOURCE_KINDS = ("files", "tfrecord", "tfds")
# source.labels for file inputs: none (-1), or the class folder each file sits in (sorted
# folder names -> ids, as Keras's image_dataset_from_directory and TFDS's ImageFolder).
LABEL_SOURCES = ("", "folders")
RESIZE_POLICIES = ("resize", "center_crop")
ARTIFACT_VIEWS = ("heatmap", "overlay", "grid")
# 2-D views of a gradient (maps.views.compute_views) and the ones stored in each record.
MAP_VIEWS = ("abs", "positive", "negative", "max", "image_x_abs")
RECORD_VIEWS = ("abs", "positive", "negative")
# How a record stores its gradients (store.gradient_codec); the first is the default.
GRADIENT_ENCODINGS = ("compact", "tensor")

# Engine defaults: Explainer, explain(), ExplainImages and the config's saliency section.
# float32 is exact; "auto" (reduced precision where the device has it) is opt-in, as the
# bundled configs do.
DEFAULT_SAMPLES = 50  # SmoothGrad N (the seed notebook's REPETITIONS)
DEFAULT_NOISE = 0.2  # SmoothGrad sigma as a fraction of (max - min) of each input
DEFAULT_SEED = 0
DEFAULT_THRESHOLD = 0.5  # labels_above: a label is positive from this probability on
DEFAULT_PRECISION = "float32"
DEFAULT_SAMPLE_BATCH_SIZE = 64  # model inputs per SmoothGrad / IG chunk (memory bound)
DEFAULT_IG_STEPS = 32
DEFAULT_IG_BASELINE = "zeros"
DEFAULT_PERCENTILE = 99.0  # maps are clipped at this percentile, then scaled to [0, 1]
DEFAULT_RESIZE = "resize"
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's decompression-bomb limit: larger inputs are refused

# Ground-truth boxes, as the TF object-detection TFRecords hold them (float lists, fractions
# of the image): read from TFRecord inputs when present, and written into our records.
BOX_FEATURES = tuple(f"image/object/bbox/{side}" for side in ("ymin", "xmin", "ymax", "xmax"))

# Drift gating rules (python -m pipeline drift --fail-on, run.audit_fail_on):
# METRIC[@METHOD][[SLICE]]:CHANGE, a signed number, absolute or with %.
DRIFT_RULE = (
    r"^(?P<metric>[a-z_]+)(@(?P<method>[A-Za-z0-9_]+))?(\[(?P<slice>[^\]]+)\])?"
    r":(?P<change>[+-]\d+(\.\d+)?)(?P<pct>%)?$"
)
AUDIT_DRIFT = ("", "previous")  # run.audit_drift: compare each audit with the last one
