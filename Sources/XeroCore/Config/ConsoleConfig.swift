/// The web console's sign-up policy and what a self-service project may hold (docs/console.md).
/// In the config file under `console:`; without it sign-up is closed.
public struct ConsoleConfig: Codable, Sendable, Equatable {
    public enum Signup: String, Codable, Sendable, CaseIterable {
        /// Anyone may register (what `xerotier up` uses on localhost).
        case open
        /// Only with an invite the admin made (`xerotier admin create-invite`).
        case invite
        /// Nobody; users are made by the admin (`xerotier admin create-user`).
        case closed
    }

    public var signup: Signup
    /// A self-service project (made by sign-up) holds at most this many endpoints, live API keys
    /// and join keys: open sign-up cannot multiply limits past them. Admin-made projects have none.
    public var maxEndpoints: Int
    public var maxKeys: Int
    public var maxJoinKeys: Int
    /// And at most this much in Files (uploads and batch outputs together), MiB.
    public var maxStorageMB: Int

    enum CodingKeys: String, CodingKey {
        case signup
        case maxEndpoints = "max_endpoints", maxKeys = "max_keys", maxJoinKeys = "max_join_keys", maxStorageMB = "max_storage_mb"
    }

    public init(signup: Signup = .closed, maxEndpoints: Int = 5, maxKeys: Int = 20, maxJoinKeys: Int = 5, maxStorageMB: Int = 1024) {
        self.signup = signup
        self.maxEndpoints = maxEndpoints
        self.maxKeys = maxKeys
        self.maxJoinKeys = maxJoinKeys
        self.maxStorageMB = maxStorageMB
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = ConsoleConfig()
        self.init(signup: try c.decodeIfPresent(Signup.self, forKey: .signup) ?? d.signup,
                  maxEndpoints: try c.decodeIfPresent(Int.self, forKey: .maxEndpoints) ?? d.maxEndpoints,
                  maxKeys: try c.decodeIfPresent(Int.self, forKey: .maxKeys) ?? d.maxKeys,
                  maxJoinKeys: try c.decodeIfPresent(Int.self, forKey: .maxJoinKeys) ?? d.maxJoinKeys,
                  maxStorageMB: try c.decodeIfPresent(Int.self, forKey: .maxStorageMB) ?? d.maxStorageMB)
    }

    func validate(source: String) throws {
        for (name, v) in [("max_endpoints", maxEndpoints), ("max_keys", maxKeys), ("max_join_keys", maxJoinKeys)] where !(0...100_000).contains(v) {
            throw ConfigError("\(source): console \(name) must be between 0 and 100000")
        }
        guard (0...1_048_576).contains(maxStorageMB) else { throw ConfigError("\(source): console max_storage_mb must be between 0 and 1048576") }
    }
}
