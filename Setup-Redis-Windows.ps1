<#
.SYNOPSIS
    Installs a Redis server for MIDAS on Windows: Memurai Developer edition, through winget.

.DESCRIPTION
    Redis itself publishes no Windows build. This script installs Memurai Developer
    (winget package id Memurai.MemuraiDeveloper), a Redis-compatible server for Windows
    that installs as the Windows service "Memurai", listens on 127.0.0.1:6379 and starts
    with Windows. The Developer edition is meant for development and testing; read
    Memurai's licence before using it in production.

    Nothing is installed when something already answers a Redis PING on the port: MIDAS
    then uses that server as it is (the launcher shows it as "external" and never stops it).
    An installed but stopped Memurai service is started instead of being reinstalled.

    Installing a Windows service needs an elevated PowerShell (Run as administrator).

.PARAMETER Port
    The port MIDAS uses (REDIS_PORT). Default: $env:REDIS_PORT, else 6379. Memurai's
    service listens on 6379; for another port either set REDIS_PORT=6379 or let the MIDAS
    launcher run memurai.exe itself on your port (it does so when nothing answers there).

.PARAMETER TimeoutSeconds
    How long to wait for the server to answer after installing or starting it.

.EXAMPLE
    .\Setup-Redis-Windows.ps1

.EXAMPLE
    .\Setup-Redis-Windows.ps1 -Port 6380
#>
[CmdletBinding()]
param(
    [ValidateRange(1, 65535)]
    [int] $Port = 0,

    [ValidateRange(1, 600)]
    [int] $TimeoutSeconds = 60
)

$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

$WingetId = 'Memurai.MemuraiDeveloper'
$ServiceName = 'Memurai'

if ($Port -eq 0) {
    if ($env:REDIS_PORT) { $Port = [int]$env:REDIS_PORT } else { $Port = 6379 }
}

function Test-RedisAnswers {
    <# True when a Redis-speaking server answers PING on 127.0.0.1:$TcpPort (also when it wants a password). #>
    param([Parameter(Mandatory = $true)][int] $TcpPort)
    $client = New-Object System.Net.Sockets.TcpClient
    try {
        $connect = $client.BeginConnect('127.0.0.1', $TcpPort, $null, $null)
        if (-not $connect.AsyncWaitHandle.WaitOne(1000)) { return $false }
        $client.EndConnect($connect)
        $stream = $client.GetStream()
        $stream.ReadTimeout = 2000
        $request = [System.Text.Encoding]::ASCII.GetBytes("PING`r`n")
        $stream.Write($request, 0, $request.Length)
        $buffer = New-Object byte[] 64
        $count = $stream.Read($buffer, 0, $buffer.Length)
        $reply = [System.Text.Encoding]::ASCII.GetString($buffer, 0, $count)
        return ($reply.StartsWith('+PONG') -or $reply.StartsWith('-NOAUTH'))
    }
    catch {
        return $false
    }
    finally {
        $client.Close()
    }
}

function Wait-RedisAnswers {
    param([Parameter(Mandatory = $true)][int] $TcpPort, [Parameter(Mandatory = $true)][int] $Seconds)
    $deadline = (Get-Date).AddSeconds($Seconds)
    while ((Get-Date) -lt $deadline) {
        if (Test-RedisAnswers -TcpPort $TcpPort) { return $true }
        Start-Sleep -Milliseconds 500
    }
    return $false
}

function Test-Elevated {
    $identity = [System.Security.Principal.WindowsIdentity]::GetCurrent()
    $principal = New-Object System.Security.Principal.WindowsPrincipal($identity)
    return $principal.IsInRole([System.Security.Principal.WindowsBuiltInRole]::Administrator)
}

if (Test-RedisAnswers -TcpPort $Port) {
    Write-Host "A Redis server already answers on 127.0.0.1:$Port; nothing to install."
    exit 0
}

$service = Get-Service -Name $ServiceName -ErrorAction SilentlyContinue
if ($null -eq $service) {
    if (-not (Get-Command winget -ErrorAction SilentlyContinue)) {
        Write-Error ("winget was not found. Install 'App Installer' from the Microsoft Store, or install " +
            "Memurai Developer by hand, then run this script again.")
    }
    if (-not (Test-Elevated)) {
        Write-Warning 'Not running as administrator: installing the Memurai service will probably fail.'
    }
    Write-Host "Installing $WingetId with winget ..."
    & winget install --id $WingetId --exact --silent --accept-package-agreements --accept-source-agreements
    if ($LASTEXITCODE -ne 0) {
        Write-Error "winget install $WingetId failed with exit code $LASTEXITCODE (run from an elevated PowerShell)."
    }
    $service = Get-Service -Name $ServiceName -ErrorAction SilentlyContinue
    if ($null -eq $service) {
        Write-Error "Memurai was installed but its Windows service '$ServiceName' was not found."
    }
}

if ($service.Status -ne 'Running') {
    Write-Host "Starting the $ServiceName service ..."
    Start-Service -Name $ServiceName
}
try {
    Set-Service -Name $ServiceName -StartupType Automatic
}
catch {
    Write-Warning "Could not set $ServiceName to start with Windows: $($_.Exception.Message)"
}

if (Wait-RedisAnswers -TcpPort $Port -Seconds $TimeoutSeconds) {
    Write-Host "Memurai answers on 127.0.0.1:$Port."
    exit 0
}
if ($Port -ne 6379 -and (Test-RedisAnswers -TcpPort 6379)) {
    Write-Host ("Memurai runs on 127.0.0.1:6379, not on $Port. Set REDIS_PORT=6379 in .env, or let " +
        'Start-Celery-Services.ps1 run memurai.exe on your port (it does so when nothing answers there).')
    exit 0
}
Write-Error "Memurai did not answer on 127.0.0.1:$Port within $TimeoutSeconds s; see the '$ServiceName' service and its log."
