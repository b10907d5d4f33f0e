/// What the current connection arrived over, as task-locals set around its handling by the
/// server setup (`TLSMarkedChannel`); outside one, a plain-HTTP connection.
enum ConnectionTransport {
    @TaskLocal static var isTLS = false
}
