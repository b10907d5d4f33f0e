import ArgumentParser
import Foundation
import XeroCore
import XeroQueue
import XeroStore

/// Direct administration against Redis, for operators on the box and for tests. The management
/// API and `xeroctl` are the remote equivalent.
struct Admin: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "admin", abstract: "Create projects, endpoints and keys directly in Redis.",
        subcommands: [Bootstrap.self, CreateKey.self, CreateAdminKey.self, CreateJoinKey.self, FabricKey.self])

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
}
