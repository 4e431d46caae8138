package release

// ArchOf exposes archOf, so tests cover every GOARCH/GOARM pair.
var ArchOf = archOf
