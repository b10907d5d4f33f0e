import ArgumentParser
import Foundation
import XeroCore
import XeroGateway
import XeroQueue
import XeroStore

/// Direct administration against Redis, for operators on the box and for tests. The management
/// API and `xeroctl` are the remote equivalent.
struct Admin: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "admin", abstract: "Create projects, endpoints and keys directly in Redis.",
        subcommands: [Bootstrap.self, CreateKey.self, CreateAdminKey.self, CreateJoinKey.self, FabricKey.self, CreateUser.self, CreateInvite.self])

    struct Bootstrap: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Ensure a project and endpoint exist and create a key for them; prints the base path and the key (once).")
        @OptionGroup var redis: RedisOptions
        @Option var projectSlug: String
        @Option var endpointSlug: String
        @Option var model: String
        @Option var tier: String = "standard"
        @Option(help: "Comma-separated scopes for the new key.") var scopes: String = "inference"
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            let client = try RedisClient(try RedisAddress(url: redis.url), connections: 1)
            defer { client.close() }
            let store = TenancyStore(redis: client)
            let project = try await store.ensureProject(slug: projectSlug, name: projectSlug)
            guard TenancyStore.isValidSlug(endpointSlug) else { throw ValidationError("invalid endpoint slug '\(endpointSlug)'") }
            try await store.putEndpoint(Endpoint(project: project.id, slug: endpointSlug, model: model, tier: tier, createdAt: nowMs()))
            let (key, _) = try await store.createKey(project: project, name: "bootstrap",
                                                     scopes: Set(scopes.split(separator: ",").map(String.init)))
            let path = "/proj_\(project.id)/\(endpointSlug)/v1"
            if json {
                print(#"{"project_id":"\#(project.id)","project_slug":"\#(project.slug)","base_path":"\#(path)","api_key":"\#(key)"}"#)
            } else {
                print("base path: \(path)\napi key:   \(key)")
            }
        }
    }

    struct CreateAdminKey: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a bootstrap admin credential (admin + management scopes); prints it once.")
        @OptionGroup var redis: RedisOptions
        func run() async throws {
            let client = try RedisClient(try RedisAddress(url: redis.url), connections: 1)
            defer { client.close() }
            print(try await TenancyStore(redis: client).createAdminKey().key)
        }
    }

    struct CreateJoinKey: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a join key workers present to the router; prints it once.")
        @OptionGroup var redis: RedisOptions
        @Option(help: "Make the key's workers this project's agents (slug); without it they are platform workers, serving every project.")
        var projectSlug: String?
        @Option var name: String = "workers"
        func run() async throws {
            let client = try RedisClient(try RedisAddress(url: redis.url), connections: 1)
            defer { client.close() }
            let store = TenancyStore(redis: client)
            var fleet = AgentFleet.platform
            if let projectSlug {
                guard let project = try await store.project(slug: projectSlug) else { throw ValidationError("no project with slug '\(projectSlug)'") }
                fleet = .project(project.id)
            }
            let key = try await store.createJoinKey(fleet: fleet, name: name) { try CurveKeyPair.derived(fromJoinKey: $0).publicKey }.key
            print(key)
        }
    }

    struct FabricKey: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the deployment's router public key (Z85) that workers need (--router-key / XERO_ROUTER_KEY); creates the deployment's keys if there are none.")
        @OptionGroup var redis: RedisOptions
        func run() async throws {
            print(try FabricKeys.load(try RedisAddress(url: redis.url)).server.publicKey)
        }
    }

    struct CreateKey: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create an API key for a project; prints it once.")
        @OptionGroup var redis: RedisOptions
        @Option var projectSlug: String
        @Option var name: String = "cli"
        @Option(help: "Comma-separated scopes.") var scopes: String = "inference"

        func run() async throws {
            let client = try RedisClient(try RedisAddress(url: redis.url), connections: 1)
            defer { client.close() }
            let store = TenancyStore(redis: client)
            guard let project = try await store.project(slug: projectSlug) else {
                throw ValidationError("no project with slug '\(projectSlug)'")
            }
            let (key, _) = try await store.createKey(project: project, name: name, scopes: Set(scopes.split(separator: ",").map(String.init)))
            print(key)
        }
    }

    struct CreateUser: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a console user (the password from XERO_USER_PASSWORD or the first line of stdin, never an argument).")
        @OptionGroup var redis: RedisOptions
        @Option var email: String
        @Flag(help: "A platform admin: the console's admin pages, any tier.") var admin = false
        @Option(help: "Make the user an owner of this project (slug).") var projectSlug: String?

        func run() async throws {
            guard UserStore.isPlausible(email: email) else { throw ValidationError("'\(email)' is not an email address") }
            let password = ProcessInfo.processInfo.environment["XERO_USER_PASSWORD"] ?? readLine(strippingNewline: true) ?? ""
            if let problem = Passwords.problem(password, email: email) { throw ValidationError(problem) }
            let client = try RedisClient(try RedisAddress(url: redis.url), connections: 1)
            defer { client.close() }
            let users = UserStore(redis: client)
            var project: Project?
            if let projectSlug {
                guard let p = try await TenancyStore(redis: client).project(slug: projectSlug) else { throw ValidationError("no project with slug '\(projectSlug)'") }
                project = p
            }
            guard let user = try await users.create(email: email, passwordHash: try await Passwords.hash(password), isAdmin: admin) else {
                throw ValidationError("an account with email '\(email)' exists")
            }
            if let project { try await users.addMember(user: user.id, project: project.id, role: .owner) }
            print(user.id)
        }
    }

    struct CreateInvite: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a single-use sign-up invite (console `signup: invite`); prints its code once.")
        @OptionGroup var redis: RedisOptions
        @Option(help: "Only this email may use it (default: anyone).") var email: String?
        @Option(help: "Hours it stays valid.") var hours: Int = 72

        func run() async throws {
            guard (1...24 * 365).contains(hours) else { throw ValidationError("--hours must be between 1 and 8760") }
            let client = try RedisClient(try RedisAddress(url: redis.url), connections: 1)
            defer { client.close() }
            print(try await UserStore(redis: client).createInvite(email: email, ttlSeconds: hours * 3600))
        }
    }
}
