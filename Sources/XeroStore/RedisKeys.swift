import Foundation
import XeroCore
/// Every Redis key Xerotier writes, in one place. docs/redis-keys.md documents each one;
/// keep the two in step.
public enum RedisKeys {
    public static let prefix = "xero:"

    // Tenancy (store of record).
    public static let projects = "xero:projects"                                  // SET of project ids
    public static func project(_ id: String) -> String { "xero:project:\(id)" }    // HASH
    public static func projectSlug(_ slug: String) -> String { "xero:project-slug:\(slug)" } // STRING → id
    public static func endpoints(_ project: String) -> String { "xero:endpoints:\(project)" } // SET of slugs
    public static func endpoint(_ project: String, _ slug: String) -> String { "xero:endpoint:\(project):\(slug)" } // HASH
    /// The admin's tier grants and withdrawals for a project: tier → granted | withdrawn.
    public static func projectTiers(_ project: String) -> String { "xero:project-tiers:\(project)" } // HASH
    public static func apiKey(hash: String) -> String { "xero:key:\(hash)" }       // HASH, by SHA-256 of the key
    public static func projectKeys(_ project: String) -> String { "xero:keys:\(project)" } // SET of key hashes
    public static func keyID(_ id: String) -> String { "xero:keyid:\(id)" }        // STRING → key hash
    public static func joinKey(hash: String) -> String { "xero:joinkey:\(hash)" } // HASH
    public static func projectJoinKeys(_ project: String) -> String { "xero:joinkeys:\(project)" } // SET of hashes
    public static let demo = "xero:demo"                                           // HASH: what `up` created

    // Console users (docs/console.md).
    public static func user(_ id: String) -> String { "xero:user:\(id)" }            // HASH: email, password_hash, admin, created_at
    /// Lowercased email → user id (claimed with SET NX: one account per address).
    public static func userEmail(_ email: String) -> String { "xero:user-email:\(email)" } // STRING
    public static func userProjects(_ id: String) -> String { "xero:user-projects:\(id)" } // HASH: project id → owner | member
    public static func projectMembers(_ project: String) -> String { "xero:project-members:\(project)" } // HASH: user id → role
    /// An unused sign-up invite, by the SHA-256 of its token (TTL: its lifetime).
    public static func invite(hash: String) -> String { "xero:invite:\(hash)" }     // STRING: the email it is for, or "*"
    /// Failed log-ins in the throttle window, per SHA-256 of the email and per client address (TTL).
    public static func loginFailures(_ scope: String) -> String { "xero:login-failures:\(scope)" } // STRING counter
    /// A console session (`RedisPersistDriver`: the session's JSON, TTL its expiry).
    public static func session(_ id: String) -> String { "xero:session:\(id)" }      // STRING
    /// The deployment's CURVE key pairs (server, platform client).
    public static let fabric = "xero:fabric"                                       // HASH
    /// A worker's CURVE public key (Z85) → the hash of the join key it is derived from.
    public static func curveKey(_ publicKey: String) -> String { "xero:curve:\(publicKey)" } // STRING

    // Rate limits and usage.
    public static func rateBucket(_ scope: String, _ id: String, _ kind: String) -> String { "xero:rl:\(scope):\(id):\(kind)" } // HASH {t, ts}
    /// HASH: per process (gateway, batch runner) the key's concurrency slots it holds, and `<owner>:exp` their expiry (ms).
    public static func slots(_ keyHash: String) -> String { "xero:slots:key:\(keyHash)" }
    public static func usage(_ project: String, _ endpoint: String) -> String { "xero:usage:\(project):\(endpoint)" } // HASH counters
    public static func usageEndpoints(_ project: String) -> String { "xero:usage-endpoints:\(project)" } // SET
    /// One UTC day's usage of a project: fields `<endpoint>:requests|input_tokens|output_tokens|cost_micro_usd`.
    public static func usageDay(_ project: String, day: String) -> String { "xero:usage-day:\(project):\(day)" } // HASH, 400 d
    /// `yyyymmdd` (UTC) of a time in ms.
    public static func day(ms: Int64) -> String {
        let days = Int(ms / 86_400_000)
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        let z = days + 719_468, era = (z >= 0 ? z : z - 146_096) / 146_097, doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365, doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153, d = doy - (153 * mp + 2) / 5 + 1, m = mp < 10 ? mp + 3 : mp - 9
        let y = yoe + era * 400 + (m <= 2 ? 1 : 0)
        return Formatting.padded(y, width: 4) + Formatting.padded(m, width: 2) + Formatting.padded(d, width: 2)
    }
    /// SET of the request ids settled among the jobs accepted in one 5-minute window (TTL 20 min
    /// after its last write): a second settlement of a member is skipped. Every copy of a job
    /// carries the same `acceptedAtMs`, so all its settlements meet in one set.
    public static func settled(window: Int64) -> String { "xero:settled:\(window)" }
    /// The window of a job accepted at `acceptedAtMs`: its start, in seconds since the epoch.
    public static func settledWindow(acceptedAtMs: Int64) -> Int64 { acceptedAtMs / 300_000 * 300 }
    /// A batch's record (`XeroBatch.BatchStore` owns it; settlement adds the lines' usage to it).
    public static func batch(_ id: String) -> String { "xero:batch:\(id)" }         // HASH

    // Operations (written by the router as things happen).
    /// One router's view of a tier (HASH: depth, inflight, counters; TTL 30 s): each router of a
    /// deployment writes its own, and ops tooling sums the live ones.
    public static func tier(_ name: String, router: String) -> String { "xero:tier:\(name):\(router)" }
    public static func waiting(_ tier: String) -> String { "xero:waiting:\(tier)" } // ZSET: request id → accepted_at ms
    public static func running(_ tier: String) -> String { "xero:running:\(tier)" } // ZSET: request id → dispatched_at ms
    public static let workers = "xero:workers"                                     // ZSET: worker id → last heartbeat ms
    public static func worker(_ id: String) -> String { "xero:worker:\(id)" }      // HASH, TTL
    /// SET of hex hashes of the prompt-prefix blocks the worker holds KV state for (TTL).
    public static func workerPrefixes(_ id: String) -> String { "xero:worker:\(id):prefixes" }
    public static func job(_ id: String) -> String { "xero:job:\(id)" }            // HASH, TTL
    public static let routers = "xero:routers"                                     // ZSET: router id → last tick ms
}
