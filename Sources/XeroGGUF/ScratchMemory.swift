import CXeroKernels

/// Keeps a decoding step's scratch in the heap. A forward pass allocates and frees a few MB of
/// arrays (logits are vocabulary × sequences floats: 1.6 MB at 8 SmolLM2 sequences). With glibc's
/// defaults those went back to the kernel on every free — an `munmap` or a trim of the heap top —
/// and came back as fresh zeroed pages: a `xerobench gguf-batch MODEL 8` run took 61,200 page
/// faults and 0.16–0.20 s of kernel time (4 % of its CPU), against 10,000 and 0.02–0.05 s with
/// these settings (docs/benchmarks.md, "session 14"). Blocks under 16 MB now come from the heap,
/// and up to 64 MB of freed heap is kept for reuse instead of returned: the price is at most that
/// much resident memory an idle engine process holds on to. Process-wide, set once by the first
/// model loaded.
enum ScratchMemory {
    static let retained: Void = xk_retain_scratch_memory()
}
