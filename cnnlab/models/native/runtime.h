// What every oneDNN primitive of the extension shares: the CPU engine, a per-thread stream,
// and one worker thread per XLA device that runs that device's oneDNN calls one at a time.
#pragma once

#include <cstdint>
#include <functional>

#include "oneapi/dnnl/dnnl.hpp"

namespace cnnlab_onednn {

dnnl::engine& Engine();

// This thread's stream on Engine() (primitives execute on the calling thread's OpenMP team).
dnnl::stream& ThreadStream();

// Runs `fn` on XLA device `device`'s worker thread and waits; rethrows what `fn` threw.
// Each oneDNN call already spreads over its cores with an OpenMP team; XLA calls the handlers
// from several pool threads, and each OpenMP master thread would keep its own team
// (oversubscribed, cold). oneDNN's gemm-based conv backward-data also failed ("invalid
// arguments") when executed from a thread other than the one that created it.
void RunOnDeviceWorker(int device, const std::function<void()>& fn);

// Counts created primitives (tests check that creation happens once per shape, not per call).
void CountCreated(int n);
int64_t PrimitivesCreated();

}  // namespace cnnlab_onednn
