/// How a chat prompt becomes the block hashes that prefix-aware placement compares
/// (docs/routing.md, "Prefix-aware placement"). One definition, used by the gateway (which puts a
/// job's hashes in its envelope, so the router parses no payload and needs no tokenizer) and by
/// the workers (which report the hashes of the prompts whose KV state they hold).
///
/// - The prompt's **canonical text** is its messages in order, each as its role, 0x1F, its
///   content, 0x1E. Not the rendered chat template: the router serves many models and holds no
///   template, and two prompts with the same messages render the same on one model anyway.
/// - It is cut into blocks of `blockBytes` bytes (about 64 tokens of English). Hash k is FNV-1a 64
///   over the partition (the project id), a 0xFF terminator, and the first k × `blockBytes`
///   bytes: it stands for the whole prefix up to the end of block k. A partial last block is
///   not hashed (nothing could match it yet).
/// - The partition salts every hash, so the same prompt hashes differently in two projects: what a
///   worker reports never shows that two tenants share a prompt, and matching stays per project,
///   as the engines' caches are.
/// - At most `maxBlocks` hashes (the first 256 KiB of a prompt): placement cost stays bounded.
public enum PromptBlocks {
    public static let blockBytes = 256
    public static let maxBlocks = 1024

    /// The block hashes of a prompt given as (role, content) pairs, in `partition`.
    public static func hashes<Messages: Sequence>(_ messages: Messages, partition: String) -> [UInt64]
    where Messages.Element == (role: String, content: String) {
        var h = seed(partition)
        var out: [UInt64] = []
        var inBlock = 0
        func feed(_ byte: UInt8) -> Bool {
            h = (h ^ UInt64(byte)) &* prime
            inBlock += 1
            if inBlock == blockBytes {
                inBlock = 0
                out.append(h)
                if out.count == maxBlocks { return false }
            }
            return true
        }
        for m in messages {
            for b in m.role.utf8 where !feed(b) { return out }
            guard feed(0x1F) else { return out }
            for b in m.content.utf8 where !feed(b) { return out }
            guard feed(0x1E) else { return out }
        }
        return out
    }

    /// The block hashes of a chat request's prompt.
    /// A text completion's single text prompt is one `prompt` message; several prompts or token
    /// prompts are not hashed (no placement by prefix for them).
    public static func hashes(_ chat: ChatRequest, partition: String) -> [UInt64] {
        if let completion = chat.completion {
            guard let text = completion.promptText else { return [] }
            return hashes(CollectionOfOne((role: "prompt", content: text)), partition: partition)
        }
        return hashes(chat.messages.lazy.map { (role: $0.role, content: $0.content) }, partition: partition)
    }

    static let prime: UInt64 = 0x100_0000_01b3

    static func seed(_ partition: String) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in partition.utf8 { h = (h ^ UInt64(b)) &* prime }
        return (h ^ 0xFF) &* prime
    }
}
