import SwiftLeakCore
import SwiftLeakSuppressions
import Testing

@Suite struct ValgrindParserTests {
    @Test func parsesTheWholeSyntax() throws {
        let text = """
        # a comment before anything
        {
           strdup_leak
           Memcheck:Leak
           match-leak-kinds: definite,possible
           fun:malloc
           fun:str*
           ...
           obj:/usr/lib/x86_64-linux-gnu/lib?.so.6
           src:leaky.c:31
           src:other.c
        }

          {
          # comments inside an entry
          no_kinds
          Memcheck:Leak
          fun:_Znwm
          }
        {
           helgrind_race
           Helgrind:Race
           fun:whatever
           anything: goes here
        }
        {
           a_param
           Memcheck:Param
           write(buf)
           fun:write
        }
        {
           both_tools
           Memcheck,Helgrind:Leak
           match-leak-kinds: all
           fun:calloc
        }
        """
        let set = try SuppressionSet.parse(text, file: "x.supp")
        #expect(set.leaks.count == 3)
        #expect(set.skippedEntries == 2)
        let first = set.leaks[0]
        #expect(first.name == "strdup_leak")
        #expect(first.location == SuppressionLocation(file: "x.supp", line: 3))
        #expect(first.kinds == [.definitelyLost, .possiblyLost])
        #expect(first.frames == [
            .function(Glob("malloc")), .function(Glob("str*")), .anyFrames,
            .object(Glob("/usr/lib/x86_64-linux-gnu/lib?.so.6")),
            .source(Glob("leaky.c"), line: 31), .source(Glob("other.c"), line: nil),
        ])
        #expect(set.leaks[1].name == "no_kinds")
        #expect(set.leaks[1].kinds == nil)
        #expect(set.leaks[1].location.line == 16)
        #expect(set.leaks[2].kinds == [.definitelyLost, .indirectlyLost, .possiblyLost, .stillReachable])
    }

    @Test func emptyAndCommentOnlyFilesHoldNothing() throws {
        #expect(try SuppressionSet.parse("", file: "e").isEmpty)
        #expect(try SuppressionSet.parse("# only\n\n   # comments\n", file: "e").isEmpty)
    }

    /// Each malformed form names the file and the line, and says what was expected there.
    @Test(arguments: [
        ("{\n  name\n  Memcheck:Leak\n  fun:malloc\n  bogus:thing\n}\n", 5, "expected a frame line"),
        ("{\n  name\n  Memcheck:Leak\n  fun:malloc\n", 4, "expected '}'"),
        ("{\n  name\n  Memcheck:Leak\n  fun:malloc\n{\n  other\n", 5, "expected '}'"),
        ("{\n  name\n  Memcheck:Leak\n}\n", 4, "expected at least one frame line"),
        ("{\n  name\n  Memcheck:Leak\n  match-leak-kinds: definite,lost\n  fun:malloc\n}\n", 4, "bad match-leak-kinds"),
        ("{\n  name\n  Memcheck:Leak\n  match-leak-kinds:\n  fun:malloc\n}\n", 4, "bad match-leak-kinds"),
        ("{\n  name\n  Memcheck:Leek\n  fun:malloc\n}\n", 3, "unknown Memcheck suppression kind 'Leek'"),
        ("{\n  name\n  MemcheckLeak\n  fun:malloc\n}\n", 3, "expected Tool:Kind"),
        ("{\n}\n", 2, "expected the suppression's name"),
        ("{\n  name\n}\n", 3, "expected 'Memcheck:Leak'"),
        ("{\n  a\n  Memcheck:Leak\n  fun:f\n}\nfun:g\n", 6, "expected '{'"),
        ("{\n  a\n  Helgrind:Race\n  fun:f\n", 4, "expected '}'"),
        ("{\n  a\n  Memcheck:Leak\n  fun:f\n  match-leak-kinds: all\n}\n", 5, "must come right after"),
        ("{\n  a\n  Memcheck:Leak\n  src:x.c:0\n}\n", 4, "bad line number"),
        ("leak:foo\nrace:bar\nbogus\n", 3, "expected '{'"),
        ("leak:foo\nleek:bar\n", 2, "unknown suppression type 'leek'"),
        ("leak:\n", 1, "expected a pattern"),
    ])
    func malformedInputNamesFileAndLine(text: String, line: Int, message: String) {
        do {
            _ = try SuppressionSet.parse(text, file: "bad.supp")
            Issue.record("accepted: \(text)")
        } catch {
            #expect(error.file == "bad.supp")
            #expect(error.line == line)
            #expect(error.message.contains(message), "\(error)")
            #expect(error.description.hasPrefix("bad.supp:\(line): "))
        }
    }

    @Test func unreadableFileIsAnErrorNamingIt() {
        do {
            _ = try SuppressionSet.load(path: "/nonexistent/dir/x.supp")
            Issue.record("loaded a missing file")
        } catch {
            #expect(error.description.hasPrefix("/nonexistent/dir/x.supp: cannot read"))
            #expect(error.description.contains("No such file"))
        }
        do {
            _ = try SuppressionSet.load(path: "/")
            Issue.record("loaded a directory")
        } catch {
            #expect(error.description.hasPrefix("/: cannot read"))
        }
    }
}

@Suite struct LSanParserTests {
    @Test func recognisesLeakLinesByForm() throws {
        let set = try SuppressionSet.parse("# LSan\nleak:libfoo.so\n\n  leak:^bar$  \nrace:ignored_by_us\n", file: "lsan.txt")
        #expect(set.leaks.isEmpty)
        #expect(set.lsan.map(\.template.pattern) == ["libfoo.so", "^bar$"])
        #expect(set.lsan.map(\.location.line) == [2, 4])
        #expect(set.lsan[0].name == "leak:libfoo.so")
        #expect(set.skippedEntries == 1)
    }
}
