// A scoped caching layer over the process's CPU allocator, for the fast model's CPU inference.
//
// Why: a forward at 256x256 allocates and frees about 2.6 GB of feature maps, each tensor large
// enough that glibc maps fresh pages for it and the kernel faults and zeroes them on first touch
// (about a quarter of the forward's time on a 2-core EPYC). Inside a scope, CPU allocations of
// at least kMinBytes are served from blocks freed earlier in the scope (or in the last scope), so
// the pages are touched once. Outside every scope the allocator is the one installed before.
//
// How: enter() installs the cache as c10's CPU allocator (the one at::empty asks) while at least
// one scope is open, and only over the default allocator; exit() of the last scope puts it back.
// Every exit frees the cached blocks nobody took since the previous exit (of any scope: scopes
// of several threads may overlap for ever) and keeps the rest for the next forward. Blocks come
// from c10::alloc_cpu and go back with c10::free_cpu, like the default allocator's, because
// oneDNN (ideep) allocates through raw_allocate under whichever allocator is current and frees
// through raw_deallocate under whichever is current then: a block may be freed by the default
// allocator (its entry in the table of blocks handed out then stays, and is recognised by
// malloc_usable_size or replaced when the address comes back), and the default's may come here
// (passed on to it). Allocations and frees are reported to the profiler's memory view as the
// default allocator's are; a forked child starts with no scope open.
#pragma once

#include <cstddef>
#include <cstdint>

namespace mprnet::cpu_cache {

// Only allocations of at least this many bytes are cached: smaller ones come from malloc's heap
// without page faults.
constexpr std::size_t kMinBytes = std::size_t(64) << 10;

struct Stats {
  std::int64_t hits = 0;          // allocations served from a cached block
  std::int64_t misses = 0;        // allocations of kMinBytes or more that took a new block
  std::int64_t cached_bytes = 0;  // held in free blocks, ready for reuse
  std::int64_t live_bytes = 0;    // in blocks handed out and not freed through the cache
  std::int64_t scopes = 0;        // outermost scopes closed (nested ones are not counted)
  int depth = 0;                  // scopes open now
  bool active = false;            // installed as the CPU allocator now
  bool supported = false;         // false where the cache cannot check a block's size (non-glibc)
};

void enter();
void exit();
// Frees every cached block (those handed out are unaffected); returns the bytes freed.
std::int64_t empty();
Stats stats();

}  // namespace mprnet::cpu_cache
