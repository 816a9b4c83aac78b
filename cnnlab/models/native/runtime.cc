// The engine, per-thread streams and per-device worker threads (runtime.h).
#include "runtime.h"

#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <unordered_map>

namespace cnnlab_onednn {

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

dnnl::stream& ThreadStream() {
  thread_local dnnl::stream stream(Engine());
  return stream;
}

namespace {

class Worker {
 public:
  Worker() : thread_([this] { Loop(); }) {}
  ~Worker() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void Call(const std::function<void()>& fn) {
    std::unique_lock<std::mutex> lock(call_mu_);  // one caller at a time
    std::exception_ptr error;
    {
      std::lock_guard<std::mutex> l(mu_);
      task_ = [&] {
        try {
          fn();
        } catch (...) {
          error = std::current_exception();
        }
      };
    }
    cv_.notify_all();
    {
      std::unique_lock<std::mutex> l(mu_);
      done_cv_.wait(l, [&] { return !task_; });
    }
    if (error) std::rethrow_exception(error);
  }

 private:
  void Loop() {
    std::unique_lock<std::mutex> l(mu_);
    while (true) {
      cv_.wait(l, [&] { return stop_ || task_; });
      if (stop_) return;
      task_();
      task_ = nullptr;
      done_cv_.notify_all();
    }
  }
  std::mutex call_mu_, mu_;
  std::condition_variable cv_, done_cv_;
  std::function<void()> task_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace

void RunOnDeviceWorker(int device, const std::function<void()>& fn) {
  // One worker per XLA device (data-parallel CPU devices run their steps concurrently).
  // Never destroyed: a handler may still be called while the process exits.
  static std::mutex mu;
  static auto* workers = new std::unordered_map<int, Worker*>();
  Worker* worker;
  {
    std::lock_guard<std::mutex> lock(mu);
    Worker*& slot = (*workers)[device];
    if (slot == nullptr) slot = new Worker();
    worker = slot;
  }
  worker->Call(fn);
}

namespace {
std::atomic<int64_t> g_created{0};
}  // namespace

void CountCreated(int n) { g_created.fetch_add(n); }

int64_t PrimitivesCreated() { return g_created.load(); }

}  // namespace cnnlab_onednn
