print("swiftleak")
