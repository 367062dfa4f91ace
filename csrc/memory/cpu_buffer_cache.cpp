#include "memory/cpu_buffer_cache.h"

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <c10/util/Exception.h>

#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

#if defined(__GLIBC__)
#include <malloc.h>
#include <pthread.h>
#define MPRNET_CPU_CACHE_SUPPORTED 1
#else
#define MPRNET_CPU_CACHE_SUPPORTED 0
#endif

namespace mprnet::cpu_cache {
namespace {

constexpr std::size_t kPage = 4096;

std::size_t usable_size(void* p) {
#if MPRNET_CPU_CACHE_SUPPORTED
  return malloc_usable_size(p);
#else
  (void)p;
  return 0;  // never reached: the cache is never active there
#endif
}

void release(void* p);
void reset_in_forked_child();

class Cache final : public c10::Allocator {
 public:
  Cache() {
#if MPRNET_CPU_CACHE_SUPPORTED
    pthread_atfork(nullptr, nullptr, &reset_in_forked_child);
#endif
  }

  c10::DataPtr allocate(std::size_t n) override {
    if (n >= kMinBytes) {
      std::unique_lock<std::mutex> lock(*mu_);
      if (active_) {
        std::size_t size = (n + kPage - 1) / kPage * kPage;
        void* p = take(size);  // may make `size` the cached block's
        if (p == nullptr) {
          ++stats_.misses;
          lock.unlock();
          p = fresh(size);
          lock.lock();
        }
        // An entry may already be there: a block freed by the default allocator (module docs).
        auto [it, inserted] = live_.try_emplace(p, size);
        if (!inserted) {
          stats_.live_bytes -= static_cast<std::int64_t>(it->second);
          it->second = size;
        }
        stats_.live_bytes += size;
        const std::int64_t in_use = stats_.live_bytes, held = stats_.live_bytes + stats_.cached_bytes;
        lock.unlock();
        report(p, static_cast<std::int64_t>(size), in_use, held);
        return {p, p, &release, c10::Device(c10::DeviceType::CPU)};
      }
    }
    return c10::GetDefaultCPUAllocator()->allocate(n);
  }

  // The same deleter for every pointer, as raw_deallocate requires: it tells its own blocks from
  // the default allocator's by the table of blocks handed out.
  c10::DeleterFnPtr raw_deleter() const override { return &release; }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  void free(void* p) {
    std::unique_lock<std::mutex> lock(*mu_);
    auto it = live_.find(p);
    // A block handed out here but freed by the default allocator's free (a oneDNN buffer freed
    // outside a scope) leaves a stale entry; its address may since belong to a smaller malloc
    // block of someone else, which the usable size gives away.
    if (it != live_.end() && usable_size(p) < it->second) {
      stats_.live_bytes -= it->second;
      live_.erase(it);
      it = live_.end();
    }
    if (it == live_.end()) {  // not ours: the default allocator's (a raw_deallocate here)
      lock.unlock();
      c10::GetDefaultCPUAllocator()->raw_deleter()(p);
      return;
    }
    const std::size_t size = it->second;
    live_.erase(it);
    stats_.live_bytes -= size;
    const bool keep = active_;
    if (keep) {
      free_.emplace(size, Free{p, generation_});
      stats_.cached_bytes += size;
    }
    const std::int64_t in_use = stats_.live_bytes, held = stats_.live_bytes + stats_.cached_bytes;
    lock.unlock();
    report(p, -static_cast<std::int64_t>(size), in_use, held);
    if (!keep) c10::free_cpu(p);
  }

  void enter() {
    std::lock_guard<std::mutex> lock(*mu_);
    if (depth_++ > 0 || !MPRNET_CPU_CACHE_SUPPORTED) return;
    c10::Allocator* current = c10::GetCPUAllocator();
    if (current == this) {  // exit() always uninstalls it; kept consistent all the same
      active_ = true;
      return;
    }
    // Only over the default allocator: oneDNN may free a block of ours through its deleter after
    // the scope (so blocks are malloc's), and pointers the cache does not know go to that deleter.
    if (current != c10::GetDefaultCPUAllocator()) return;
    c10::SetCPUAllocator(this, 0);
    // An allocator registered with a higher priority keeps its place: then nothing is cached.
    active_ = c10::GetCPUAllocator() == this;
  }

  void exit() {
    std::unique_lock<std::mutex> lock(*mu_);
    TORCH_CHECK(depth_ > 0, "mprnet cpu_cache: exit() without a matching enter()");
    if (--depth_ == 0) {
      if (active_ && c10::GetCPUAllocator() == this) c10::SetCPUAllocator(c10::GetDefaultCPUAllocator(), 0);
      active_ = false;
      ++stats_.scopes;
    }
    // Keep what was freed since the last exit of any scope (the next forward of the same size
    // wants the same blocks); older blocks nobody took since are from another size or pattern.
    // At every exit, not only the outermost: scopes of several threads may overlap for ever.
    const std::vector<void*> stale = detach_cached(/*all=*/false);
    ++generation_;
    lock.unlock();
    for (void* p : stale) c10::free_cpu(p);
  }

  std::int64_t empty() {
    std::unique_lock<std::mutex> lock(*mu_);
    const std::int64_t bytes = stats_.cached_bytes;
    const std::vector<void*> blocks = detach_cached(/*all=*/true);
    lock.unlock();
    for (void* p : blocks) c10::free_cpu(p);
    return bytes;
  }

  Stats stats() {
    std::lock_guard<std::mutex> lock(*mu_);
    Stats s = stats_;
    s.depth = depth_;
    s.active = active_;
    s.supported = MPRNET_CPU_CACHE_SUPPORTED;
    return s;
  }

  // A forked child has one thread: no scope is open there, whatever the parent's threads were
  // doing, and the lock may have been held by a thread that does not exist in the child.
  void reset_after_fork() {
    mu_ = new std::mutex();  // the parent's (perhaps locked) mutex is left alone
    if (c10::GetCPUAllocator() == this) c10::SetCPUAllocator(c10::GetDefaultCPUAllocator(), 0);
    depth_ = 0;
    active_ = false;
  }

 private:
  struct Free {
    void* p;
    std::uint64_t generation;
  };

  // A new block; when memory runs out, the cached blocks (none of which fitted) go first.
  void* fresh(std::size_t size) {
    try {
      return c10::alloc_cpu(size);
    } catch (const c10::Error&) {
      if (empty() == 0) throw;
      return c10::alloc_cpu(size);  // throws again when that was not enough, nothing recorded
    }
  }

  // The smallest cached block of `size` to 5/4 `size` bytes (a bigger one would hold memory a
  // later, bigger request wants), or nullptr; `size` becomes the block's, which it keeps when it
  // comes back. Called with mu_ held.
  void* take(std::size_t& size) {
    auto it = free_.lower_bound(size);
    if (it == free_.end() || it->first > size + size / 4) return nullptr;
    void* p = it->second.p;
    size = it->first;
    stats_.cached_bytes -= size;
    free_.erase(it);
    ++stats_.hits;
    return p;
  }

  // Takes the cached blocks (all, or those nobody took since the last exit) out of the table,
  // for the caller to free once the lock is released. Called with mu_ held.
  std::vector<void*> detach_cached(bool all) {
    std::vector<void*> out;
    for (auto it = free_.begin(); it != free_.end();) {
      if (all || it->second.generation != generation_) {
        out.push_back(it->second.p);
        stats_.cached_bytes -= it->first;
        it = free_.erase(it);
      } else {
        ++it;
      }
    }
    return out;
  }

  // What the profiler's memory view would have seen from the default allocator.
  static void report(void* p, std::int64_t delta, std::int64_t in_use, std::int64_t held) {
    if (c10::memoryProfilingEnabled()) {
      c10::reportMemoryUsageToProfiler(p, delta, static_cast<std::size_t>(in_use), static_cast<std::size_t>(held),
                                       c10::Device(c10::DeviceType::CPU));
    }
  }

  std::mutex* mu_ = new std::mutex();
  int depth_ = 0;
  bool active_ = false;
  std::uint64_t generation_ = 0;
  std::unordered_map<void*, std::size_t> live_;
  std::multimap<std::size_t, Free> free_;
  Stats stats_;
};

// Never destroyed: storages may outlive static destruction and still call release().
Cache& cache() {
  static Cache* c = new Cache();
  return *c;
}

void release(void* p) { cache().free(p); }
void reset_in_forked_child() { cache().reset_after_fork(); }

}  // namespace

void enter() { cache().enter(); }
void exit() { cache().exit(); }
std::int64_t empty() { return cache().empty(); }
Stats stats() { return cache().stats(); }

}  // namespace mprnet::cpu_cache
