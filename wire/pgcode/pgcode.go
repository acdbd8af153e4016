package pgcode

// Class 08: connection exception.
const (
	ConnectionException = "08000"
	ConnectionFailure   = "08006"
	ProtocolViolation   = "08P01"
)

// Class 0A: feature not supported.
const (
	FeatureNotSupported = "0A000"
)

// Class 21: cardinality violation.
const (
	CardinalityViolation = "21000"
)

// Class 22: data exception.
const (
	CharacterNotInRepertoire = "22021"
	InvalidParameterValue    = "22023"
)

// Class 25: invalid transaction state.
const (
	InvalidTransactionState = "25000"
	NoActiveSQLTransaction  = "25P01"
	InFailedSQLTransaction  = "25P02"
)

// Class 26: invalid SQL statement name.
const (
	InvalidSQLStatementName = "26000"
)

// Class 28: invalid authorization specification.
const (
	InvalidAuthorizationSpecification = "28000"
	InvalidPassword                   = "28P01"
)

// Class 3D: invalid catalog name (the database does not exist).
const (
	InvalidCatalogName = "3D000"
)

// Class 40: transaction rollback.
const (
	TransactionRollback        = "40000"
	SerializationFailure       = "40001"
	StatementCompletionUnknown = "40003"
)

// Class 42: syntax error or access rule violation.
const (
	InsufficientPrivilege = "42501"
	SyntaxError           = "42601"
	UndefinedObject       = "42704"
	DatatypeMismatch      = "42804"
	CannotCoerce          = "42846"
	UndefinedFunction     = "42883"
	AmbiguousFunction     = "42725"
	UndefinedParameter    = "42P02"
	UndefinedColumn       = "42703"
	UndefinedTable        = "42P01"
	DuplicateCursor       = "42P03"
	IndeterminateDatatype = "42P18"
)

// Class 53: insufficient resources.
const (
	OutOfMemory        = "53200"
	TooManyConnections = "53300"
)

// Class 54: program limit exceeded.
const (
	ProgramLimitExceeded = "54000"
)

// Class 58: system error.
const (
	IOError = "58030"
)

// Class 55: object not in prerequisite state.
const (
	ObjectNotInPrerequisiteState = "55000"
	ObjectInUse                  = "55006"
	LockNotAvailable             = "55P03"
)

// Class 57: operator intervention.
const (
	QueryCanceled      = "57014"
	AdminShutdown      = "57P01"
	CannotConnectNow   = "57P03"
	IdleSessionTimeout = "57P05"
)

// Class F0: configuration file error.
const (
	ConfigFileError = "F0000"
)

// Class XX: internal error.
const (
	InternalError = "XX000"
)
