"""profile_step files cnnlab's FFI calls by what they compute (issue 29): the native BatchNorm
passes under batchnorm, the oneDNN convolutions under conv — not all under conv."""
from cnnlab.bench import profile

HLO = """ENTRY %main (a: f32[2]) -> f32[2] {
  %ffi_call.3 = (f32[2], f32[2]) custom-call(%a), custom_call_target="cnnlab_bn_fwd"
  ROOT %ffi_call.4 = f32[2] custom-call(%a), custom_call_target="cnnlab_onednn_conv_fwd"
  %ffi_call.5 = f32[2] custom-call(%a), custom_call_target="cnnlab_bn_bwd"
}"""


def test_ffi_calls_are_categorised_by_target():
  known = profile.hlo_categories(HLO)
  assert known == {"ffi_call.3": "batchnorm", "ffi_call.4": "conv", "ffi_call.5": "batchnorm"}
  assert profile.xla_category("ffi_call.5", known) == "batchnorm"
  assert profile.xla_category("ffi_call.9") == "conv"     # unknown calls: as before
