"""TensorFlow Lite conversion for publishing: `model.tflite` with its SignatureDefs in both places a server may
look for them.

Today's converter writes signatures only into the flatbuffer's signature table. TF Serving's C++ TFLite path
(`tflite_session.cc`) reads them only from the `signature_defs_metadata` metadata entry (a flexbuffer map of
serialized SignatureDefs, the layout older converters wrote) and otherwise invents a `serving_default` over raw
tensor names. Writing the entry too makes the real tensorflow/serving image and the embedded server expose the
same signatures for the same file.
"""

from __future__ import annotations

from pathlib import Path

from flatbuffers import Builder, flexbuffers
from tensorflow.core.protobuf import meta_graph_pb2

from tfsb.server.tflite import PREDICT_METHOD as PREDICT, SIGNATURE_METADATA, tensor_info


def convert_saved_model(path: Path, signatures: list[str]) -> bytes:
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_saved_model(str(path), signature_keys=signatures).convert()


def table_signature_defs(content: bytes) -> dict[str, meta_graph_pb2.SignatureDef]:
    """The flatbuffer's signature table as SignatureDefs (tensor names as the interpreter knows them)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content)
    out = {}
    for key in interpreter.get_signature_list():
        runner = interpreter.get_signature_runner(key)
        sd = meta_graph_pb2.SignatureDef(method_name=PREDICT)
        for target, details in ((sd.inputs, runner.get_input_details()), (sd.outputs, runner.get_output_details())):
            for alias, d in details.items():
                target[alias].CopyFrom(tensor_info(d))
        out[key] = sd
    return out


def primary_subgraph_signatures(content: bytes,
                                sigdefs: dict[str, meta_graph_pb2.SignatureDef]) -> dict[str, meta_graph_pb2.SignatureDef]:
    """The signatures whose tensors are inputs/outputs of the first subgraph: the only ones TF Serving's C++
    can resolve from the metadata entry (a converter puts each further signature in a subgraph of its own)."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=content)
    inputs = {d["name"] for d in it.get_input_details()}
    outputs = {d["name"] for d in it.get_output_details()}
    return {k: sd for k, sd in sigdefs.items()
            if all(t.name in inputs for t in sd.inputs.values()) and all(t.name in outputs for t in sd.outputs.values())}


def with_signature_metadata(content: bytes, sigdefs: dict[str, meta_graph_pb2.SignatureDef], *,
                            drop_table: bool = False, rename: dict[str, str] | None = None) -> bytes:
    """`content` re-packed with a `signature_defs_metadata` entry holding `sigdefs`. `drop_table` and `rename`
    (tensor names) reproduce older converters' files, for tests."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(content, 0))
    if drop_table:
        model.signatureDefs = []
    for sg in model.subgraphs:
        for t in sg.tensors:
            name = t.name.decode() if isinstance(t.name, bytes) else t.name
            if rename and name in rename:
                t.name = rename[name]
    model.metadata = [m for m in (model.metadata or []) if _name(m.name) != SIGNATURE_METADATA]
    if sigdefs:
        fbb = flexbuffers.Builder()
        with fbb.Map():
            for key in sorted(sigdefs):
                fbb.Key(key)
                # TFLite's C++ writer stores each serialized proto as a flexbuffer *string* of arbitrary bytes,
                # which the Python builder's String() (str only) cannot express
                fbb._WriteBlob(sigdefs[key].SerializeToString(), append_zero=True, type_=flexbuffers.Type.STRING)
        buf = schema.BufferT()
        buf.data = list(fbb.Finish())
        model.buffers.append(buf)
        md = schema.MetadataT()
        md.name = SIGNATURE_METADATA
        md.buffer = len(model.buffers) - 1
        model.metadata.append(md)
    b = Builder(len(content) + 1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def _name(n) -> str:
    return n.decode() if isinstance(n, bytes) else (n or "")
