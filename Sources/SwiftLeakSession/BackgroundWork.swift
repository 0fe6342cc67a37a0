import Glibc

/// Work run on a thread of its own from its creation until `join()`, which waits for it (or, when
/// no thread could be started, runs it there). Used where the end of a run has two independent
/// pieces of work and a core to spare: the program's core is free once it has exited.
final class BackgroundWork: @unchecked Sendable {
    private let work: () -> Void
    private var thread: pthread_t?

    init(_ work: @escaping () -> Void) {
        self.work = work
        let box = Unmanaged.passRetained(self)
        var handle = pthread_t()
        let started = pthread_create(&handle, nil, { context in
            let background = Unmanaged<BackgroundWork>.fromOpaque(context!).takeRetainedValue()
            background.work()
            return nil
        }, box.toOpaque())
        if started == 0 {
            thread = handle
        } else {
            box.release()
        }
    }

    /// Returns once the work is done (everything it wrote is then visible here). Call it once.
    func join() {
        if let thread {
            pthread_join(thread, nil)
        } else {
            work()
        }
        thread = nil
    }
}
