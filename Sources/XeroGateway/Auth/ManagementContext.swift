import Hummingbird
import XeroCore
import XeroStore

/// Who calls the management API and which project they act on: a key with the `management`
/// scope acts on its own project; the `admin` key on any (`?project=<id or slug>`) or on the
/// platform itself. The console's sessions resolve to the same value, so one set of rules serves both.
public struct ManagementCaller: Sendable {
    public var key: KeyRecord
    public var project: String?
    public var isAdmin: Bool { key.scopes.contains(KeyRecord.admin) }

    public func requireProject() throws -> String {
        guard let project, !project.isEmpty else {
            throw APIError.invalidRequest("An admin key must name a project: add ?project=<id or slug>.", param: "project")
        }
        return project
    }

    /// Join keys a project's key makes are that project's agents; the admin's (without
    /// ?project=) are the platform's.
    public func joinKeyFleet() throws -> AgentFleet {
        if isAdmin && (project ?? "").isEmpty { return .platform }
        return .project(try requireProject())
    }

    /// Whose models this caller manages: the project's, or the platform's for the admin without
    /// ?project= (platform models are visible to every project).
    public func modelOwner() throws -> String {
        if isAdmin && (project ?? "").isEmpty { return ModelRecord.platform }
        return try requireProject()
    }
}

/// The request context of every `/manage/v1` route: made only after `ManagementAuthMiddleware`
/// authenticated the caller.
public struct ManagementContext: ChildRequestContext {
    public var coreContext: CoreRequestContextStorage
    public let caller: ManagementCaller

    public init(context: GatewayRequestContext) throws {
        guard let caller = context.management else {
            throw APIError.internalError("This route is not behind authentication.")
        }
        coreContext = context.coreContext
        self.caller = caller
    }
}
