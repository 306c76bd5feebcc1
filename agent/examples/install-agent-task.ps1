# PowerAutomation agent, polling mode, as a Windows Scheduled Task: starts at logon of this user,
# restarts every minute if it stops, opens no port. Run in PowerShell as that user:
#   powershell -ExecutionPolicy Bypass -File install-agent-task.ps1
# Remove:  Unregister-ScheduledTask -TaskName PowerAutomationAgent -Confirm:$false
# Logs:    C:\powerautomation\agent.log
$Python      = "C:\Windows\py.exe"                      # or the full path to python.exe
$Agent       = "C:\powerautomation\powerautomation_agent.py"
$Platform    = "https://platform.example.org"
$Environment = "win_laptop_003"
$TokenFile   = "C:\powerautomation\agent-token.txt"     # readable by this user only
$Script      = "C:\aicore\init_aicore.sh"
$Bash        = "C:\Program Files\Git\bin\bash.exe"      # Git for Windows runs the .sh script
$Log         = "C:\powerautomation\agent.log"

# cmd /c so the agent's stderr (its log) goes to a file.
$Arguments = "/c `"`"$Python`" -3 `"$Agent`" --poll $Platform --environment-id $Environment " +
             "--token-file `"$TokenFile`" --script `"$Script`" --interpreter `"$Bash`" >> `"$Log`" 2>&1`""
$Action   = New-ScheduledTaskAction -Execute "cmd.exe" -Argument $Arguments
$Trigger  = New-ScheduledTaskTrigger -AtLogOn -User $env:USERNAME
$Settings = New-ScheduledTaskSettingsSet -RestartCount 999 -RestartInterval (New-TimeSpan -Minutes 1) `
            -ExecutionTimeLimit (New-TimeSpan -Seconds 0) -AllowStartIfOnBatteries -DontStopIfGoingOnBatteries
Register-ScheduledTask -TaskName "PowerAutomationAgent" -Action $Action -Trigger $Trigger -Settings $Settings `
    -Description "PowerAutomation agent (polling): runs init_aicore.sh after platform deploys" -Force
Start-ScheduledTask -TaskName "PowerAutomationAgent"
