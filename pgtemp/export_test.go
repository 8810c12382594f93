package pgtemp

// Exported for pgtemp_test, which imports testenv (and testenv imports
// pgtemp, so an internal test could not).
var (
	PickBinaries = pickBinaries
	GlobbedDirs  = globbedDirs
)
